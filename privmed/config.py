"""Run configuration: frozen dataclasses, validated at creation, that reject unknown keys.

A configuration comes from three layers, later ones winning: the defaults below,
a YAML file (``--config run.yaml``), and command-line options. The resolved
configuration is written to ``RUN/config.yaml`` and is what ``--resume`` compares.
Longer than the house's 400 lines on purpose: every section a user can write sits in this one file.

YAML layout (every section optional)::

    data:     {path: ../shared/data/cbis-ddsm-masses, class_names: [benign, malignant], positive_class: malignant,
               image_size: 128}
    model:    {name: scatter_linear}   # + args: {...}, weights: PATH, freeze: backbone (privmed.models.configured)
    privacy:  {epsilon: 1, delta: 1.0e-5, clip_norm: 1.0, accountant: prv}
    training: {epochs: 20, batch_size: 128, lr: 0.1, seed: 0}
    synthetic: {path: synth/g1, use: pretrain, finetune: full}
    out: runs/eps1
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from privmed import atomic, rundir, safe_yaml
from privmed.errors import PrivmedError

#: largest image side (2D) and volume side (3D) privmed reads: beyond, memory runs out before a message could
MAX_IMAGE_SIZE = {2: 1024, 3: 256}
SPATIAL_DIMS = tuple(MAX_IMAGE_SIZE)
ACCOUNTANTS = ("prv", "rdp")
OPTIMIZERS = ("sgd", "adam")
PRIVACY_UNITS = ("patient", "image")
#: where a feature model's head centre comes from (privmed.training.start.public_centre_inputs)
CENTER_SOURCES = ("auto", "phantom", "channels", "private")
UNKNOWN_KEY = "unknown {where} key(s) {keys}; known keys: {known}."
BAD_VALUE = "{where}.{key} = {value!r}: {why}."
#: the most epochs a run may train (beyond, a typo: 1e12 epochs would never end)
MAX_EPOCHS = 10_000
#: seeds are what numpy accepts: 0 to 2**32 - 1
MAX_SEED = 2**32 - 1
#: the smallest delta privmed accepts: below it, (epsilon, delta) says nothing more than (epsilon, 0) would
MIN_DELTA = 1e-12


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how to read them.

    ``path=None`` selects the built-in in-silico mammography phantom.
    """

    path: str | None = None
    label_columns: tuple[str, ...] = ("label",)
    positive_class: str | None = None  # a class name or a label value; None: label 1, or 'malignant' by name
    class_names: tuple[str, ...] | None = None  # names of the label values 0 and 1 (None: from the data)
    image_size: int = 64
    spatial_dims: int = 2
    split_column: str = "split"
    patient_column: str = "patient_id"
    path_column: str = "path"
    attribute_columns: tuple[str, ...] | None = None  # None: every other manifest column
    val_fraction: float = 0.2  # only used when the data has no splits
    test_fraction: float = 0.2
    phantom_samples: int = 2000
    seed: int = 0  # the phantom's seed and the seed of the split of data without splits; fixed across training seeds
    allow_outside_root: bool = False  # a manifest may list images outside its own folder
    lesion_fraction: float = 0.5  # lesion-centred data: the central fraction of each side that is the lesion (0: not)

    def __post_init__(self) -> None:
        require(self.spatial_dims in SPATIAL_DIMS, "data", "spatial_dims", self.spatial_dims, "must be 2 or 3")
        largest = MAX_IMAGE_SIZE[self.spatial_dims]
        require(16 <= self.image_size <= largest, "data", "image_size", self.image_size,
                f"must be between 16 and {largest} for {self.spatial_dims}D images (memory grows with "
                f"{'its square' if self.spatial_dims == 2 else 'its cube'})")
        require(len(self.label_columns) >= 1, "data", "label_columns", self.label_columns, "name at least one column")
        require(0 < self.val_fraction < 1 and 0 < self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1, "data", "val_fraction/test_fraction",
                (self.val_fraction, self.test_fraction), "each in (0, 1) and their sum below 1")
        require(0 <= self.lesion_fraction < 1, "data", "lesion_fraction", self.lesion_fraction,
                "give the central fraction of each side the lesion fills in lesion-centred data (e.g. 0.5), "
                "or 0 when the images are not centred on a lesion")
        require(self.phantom_samples >= 100, "data", "phantom_samples", self.phantom_samples, "must be >= 100")
        require(0 <= self.seed <= MAX_SEED, "data", "seed", self.seed, f"must be an integer from 0 to {MAX_SEED}")
        if self.class_names is not None and len(self.class_names) == 1 and "," in self.class_names[0]:
            object.__setattr__(self, "class_names", tuple(n.strip() for n in self.class_names[0].split(",")))
        require(self.class_names is None or (len(self.class_names) == 2 and len(set(self.class_names)) == 2
                                             and all(self.class_names)), "data", "class_names", self.class_names,
                "give two different names, of the label values 0 and 1 in that order (e.g. benign,malignant)")
        rundir.check_folder_names(self.class_names or (), "data.class_names, --class-names")


#: model.freeze: which part of a pretrained network trains (privmed.models.finetune.FREEZE_MODES)
FREEZE_MODES = ("none", "backbone", "last_block", "bias", "lora")


@dataclass(frozen=True)
class ModelConfig:
    """Which network: a registry name (``privmed models`` lists them) or ``monai:Name``; its keyword ``args``,
    pretrained ``weights`` on disk, ``freeze`` (``backbone``: only the classifier layer trains; ``last_block``,
    ``bias``, ``lora``: :mod:`privmed.models.finetune`) and
    ``replace_batchnorm`` (Opacus's ModuleValidator.fix): see :mod:`privmed.models.configured`."""

    name: str = "scatter_linear"
    norm: str = "group"
    args: dict[str, Any] = field(default_factory=dict, hash=False)
    weights: str | None = None
    freeze: str = "none"
    replace_batchnorm: bool = False

    def __post_init__(self) -> None:
        require(self.norm in ("group", "batch"), "model", "norm", self.norm, "use 'group' (DP-safe) or 'batch'")
        require(isinstance(self.args, Mapping) and all(isinstance(k, str) for k in self.args), "model", "args",
                 self.args, "give a mapping of argument names to values, e.g. {width: 0.5}")
        object.__setattr__(self, "args", dict(self.args))
        require(self.freeze in FREEZE_MODES, "model", "freeze", self.freeze, f"use one of {', '.join(FREEZE_MODES)}")
        require(self.freeze == "none" or self.weights, "model", "freeze", self.freeze, "needs --model-weights")


@dataclass(frozen=True)
class PrivacyConfig:
    """The DP-SGD guarantee. ``epsilon=inf`` and no ``noise_multiplier`` means non-private.

    Give either a target ``epsilon`` (noise is calibrated for the whole schedule)
    or a ``noise_multiplier`` (epsilon is then whatever the schedule spends).
    ``unit``: whom the guarantee protects, ``patient`` (one patient and all of their
    images; the default when the data has patient ids) or ``image`` (the default
    otherwise); see :mod:`privmed.privacy.units`. ``max_images_per_patient`` (k, public)
    caps a sampled patient's images in one step. ``delta=None`` means 1/(10 N) for N
    protected units (patients or images). ``replayable_noise`` derives the noise and the
    Poisson batches from ``training.seed`` (debugging, exact reproduction): the run is
    then not private, and its ledger says so. ``center``: a feature model's head centre is the
    mean features of phantom patches (``phantom``: drawn by a program, free), that mean corrected
    by the training data's per-channel mean released with noise ``center_noise_multiplier``
    (``channels``, the default: C numbers released, not C x H x W), or the training mean
    released whole with that noise (``private``). The phantom draws one-channel 2D patches;
    for other images ``channels`` is ``private``. ``auto`` (the phantom where it can be
    drawn, else private) was the default before ``channels``; runs recorded with it rebuild as trained.
    """

    epsilon: float = math.inf
    delta: float | None = None
    noise_multiplier: float | None = None
    clip_norm: float = 1.0
    accountant: str = "prv"
    center_noise_multiplier: float = 5.0  # DP feature centring for feature models, see privmed.training.inputs
    center: str = "channels"  # the head's centre: phantom (free), channels (phantom + private per-channel), private
    unit: str | None = None  # None: patient when the data has patient ids, else image
    max_images_per_patient: int = 1  # measured on CBIS-DDSM validation: benchmarks/results/cbis_utility.md (_k2, _k4)
    replayable_noise: bool = False

    def __post_init__(self) -> None:
        from privmed.errors import EPSILON_NOT_A_NUMBER, EPSILON_NOT_POSITIVE

        if math.isnan(self.epsilon):
            raise PrivmedError(EPSILON_NOT_A_NUMBER.format(epsilon=self.epsilon))
        if self.epsilon <= 0:
            raise PrivmedError(EPSILON_NOT_POSITIVE.format(epsilon=self.epsilon))
        require(self.delta is None or 0 < self.delta < 1, "privacy", "delta", self.delta,
                "must be a number in (0, 1)")
        require(self.delta is None or self.delta >= MIN_DELTA, "privacy", "delta", self.delta,
                f"is below {MIN_DELTA:g}, too small to mean anything (the accountants cannot resolve it, and "
                f"{MIN_DELTA:g} already makes a failure vanishingly rare); give a delta of at least {MIN_DELTA:g}, "
                f"or leave it out for 1/(10 N)")
        require(self.noise_multiplier is None or 0 <= self.noise_multiplier < math.inf, "privacy",
                "noise_multiplier", self.noise_multiplier, "must be a finite number >= 0")
        require(not (math.isfinite(self.epsilon) and self.noise_multiplier is not None), "privacy",
                "noise_multiplier", self.noise_multiplier, "give either epsilon or noise_multiplier, not both")
        require(self.clip_norm > 0, "privacy", "clip_norm", self.clip_norm, "must be > 0 (inf disables clipping)")
        require(math.isfinite(self.clip_norm) or self.noise_multiplier == 0, "privacy", "clip_norm", self.clip_norm,
                "an infinite clip norm needs noise_multiplier 0 (noise is scaled by the clip norm)")
        require(self.accountant in ACCOUNTANTS, "privacy", "accountant", self.accountant, "use 'prv' or 'rdp'")
        require(0 < self.center_noise_multiplier < math.inf, "privacy", "center_noise_multiplier",
                self.center_noise_multiplier, "must be a finite number > 0")
        require(self.center in CENTER_SOURCES, "privacy", "center", self.center,
                "use 'auto', 'phantom' (the mean features of phantom patches: free) or 'private' (released with noise)")
        require(self.unit is None or self.unit in PRIVACY_UNITS, "privacy", "unit", self.unit,
                "use 'patient' (one patient and all of their images) or 'image'")
        require(self.max_images_per_patient >= 1, "privacy", "max_images_per_patient", self.max_images_per_patient,
                "must be >= 1 (the images of one patient a step may use)")

    @property
    def private(self) -> bool:
        """True when training runs through DP-SGD."""
        return math.isfinite(self.epsilon) or self.noise_multiplier is not None


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation schedule. ``batch_size`` is the logical (expected, Poisson) batch;
    ``physical_batch_size`` only bounds memory and never changes the result's privacy."""

    epochs: int = 30
    batch_size: int = 128
    physical_batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: bool = True
    ema: float = 0.0  # decay per step of an average of the weights, validated and kept (0: off)
    augment_views: int = 1  # augmented views per image, their gradients averaged before clipping
    seed: int = 0
    bootstrap_resamples: int = 1000
    num_workers: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "physical_batch_size", "augment_views"):
            require(getattr(self, key) >= 1, "training", key, getattr(self, key), "must be >= 1")
        require(self.epochs <= MAX_EPOCHS, "training", "epochs", self.epochs, f"must be at most {MAX_EPOCHS}")
        require(self.optimizer in OPTIMIZERS, "training", "optimizer", self.optimizer, "use 'sgd' or 'adam'")
        require(self.lr > 0, "training", "lr", self.lr, "must be > 0")
        require(math.isfinite(self.lr), "training", "lr", self.lr, "must be a finite number > 0")
        require(0 <= self.momentum < 1, "training", "momentum", self.momentum, "must be in [0, 1) (0.9 typical)")
        require(0 <= self.weight_decay < math.inf, "training", "weight_decay", self.weight_decay,
                "must be a finite number >= 0 (0: none)")
        require(0 <= self.seed <= MAX_SEED, "training", "seed", self.seed, f"must be an integer from 0 to {MAX_SEED}")
        require(self.num_workers >= 0, "training", "num_workers", self.num_workers,
                "must be >= 0 (0: images decoded in the training process)")
        require(self.augment or self.augment_views == 1, "training", "augment_views", self.augment_views,
                "needs augment: true (the views are augmented copies of each image)")
        require(0.0 <= self.ema < 1.0, "training", "ema", self.ema, "must be in [0, 1): 0 is off, 0.9-0.999 typical")
        require(self.bootstrap_resamples >= 100, "training", "bootstrap_resamples", self.bootstrap_resamples,
                "must be >= 100")


SYNTHETIC_USES = ("augment", "pretrain", "only")
FINETUNE_MODES = ("full", "head")


@dataclass(frozen=True)
class SyntheticConfig:
    """Synthetic images in classifier training (``path=None``: none).

    ``use``: ``augment`` (real + synthetic under DP-SGD), ``pretrain`` (non-private
    training on synthetic, then DP fine-tuning on real: ``finetune`` the ``full`` model or
    only its ``head``, keeping the pretrained head or re-initialising it) or ``only``
    (synthetic alone; the private training split is not touched).
    ``pretrain_lr=None`` means ``training.lr``. ``public``: the user declares that the
    folder holds no patient of the private data (a public data set, or samples of a
    generator trained only on public data), so it costs no privacy; the ledger states
    the declaration and privmed checks what it can (no identical image, no shared
    patient id, no generator trained on the private data).
    """

    path: str | None = None
    use: str = "pretrain"
    finetune: str = "full"
    reinit_head: bool = False
    pretrain_epochs: int = 20
    pretrain_lr: float | None = None
    public: bool = False

    def __post_init__(self) -> None:
        require(not self.public or self.path is not None, "synthetic", "public", self.public,
                "needs the folder it declares public; give it with --synthetic")
        require(self.use in SYNTHETIC_USES, "synthetic", "use", self.use, f"use one of {list(SYNTHETIC_USES)}")
        require(self.finetune in FINETUNE_MODES, "synthetic", "finetune", self.finetune,
                f"use one of {list(FINETUNE_MODES)}")
        require(1 <= self.pretrain_epochs <= MAX_EPOCHS, "synthetic", "pretrain_epochs", self.pretrain_epochs,
                f"must be >= 1 and at most {MAX_EPOCHS}")
        require(self.pretrain_lr is None or 0 < self.pretrain_lr < math.inf, "synthetic", "pretrain_lr",
                self.pretrain_lr, "must be > 0")


@dataclass(frozen=True)
class TuneConfig:
    """A private hyper-parameter search: every combination of the values given is a candidate.

    Each candidate is trained with DP-SGD on the private data at one shared noise multiplier,
    calibrated so that all candidates together (plain composition, through the accountant)
    spend the run's target epsilon; the candidate and epoch with the best validation AUROC
    are kept. Empty (the default): no search, one candidate.
    """

    lr: tuple[float, ...] = ()
    epochs: tuple[int, ...] = ()
    batch_size: tuple[int, ...] = ()
    weight_decay: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for key in ("lr", "epochs", "batch_size"):
            require(all(0 < v < math.inf for v in getattr(self, key)), "tune", key, getattr(self, key),
                    "every value must be a finite number > 0")
        require(all(v <= MAX_EPOCHS for v in self.epochs), "tune", "epochs", self.epochs,
                f"every value must be at most {MAX_EPOCHS}")
        require(all(0 <= v < math.inf for v in self.weight_decay), "tune", "weight_decay", self.weight_decay,
                "every value must be a finite number >= 0")

    @property
    def grid(self) -> dict[str, tuple]:
        """The searched keys of the training section and their values."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def candidates(self, training: "TrainingConfig") -> list["TrainingConfig"]:
        """The training configurations searched, in a fixed order (``[training]`` without a grid)."""
        grid = self.grid
        combos = itertools.product(*grid.values())
        return [dataclasses.replace(training, **dict(zip(grid, combo))) for combo in combos] if grid else [training]


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``privmed train`` run needs."""

    out: str = "runs/latest"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def __post_init__(self) -> None:
        from privmed.models.registry import check_model_choice, recorded_defaults  # fails in a second, before data

        require(isinstance(self.out, str) and self.out.strip() != "", "run", "out", self.out,
                "give the run's folder (--out DIR)")
        check_model_choice(self.model.name, spatial_dims=self.data.spatial_dims, norm=self.model.norm,
                           args=self.model.args)
        for arg, value in recorded_defaults(self.model.name).items():  # in config.yaml even at their default
            self.model.args.setdefault(arg, value)
        if self.synthetic.path is not None and self.synthetic.use == "only" and self.privacy.private:
            raise PrivmedError("synthetic.use = 'only' trains on synthetic images alone and never touches the "
                               "private training split, so DP-SGD has nothing to protect: leave out --epsilon / "
                               "--noise-multiplier. The run's epsilon is then the generator's.")

    def to_dict(self) -> dict[str, Any]:
        """Plain-YAML form (tuples as lists, inf as the string 'inf')."""
        return to_plain(dataclasses.asdict(self))

    def identity(self) -> dict[str, Any]:
        """The parts that must not change when a run is resumed (everything but ``out``, the
        evaluation-only bootstrap count, and where and in what chunks it computes)."""
        d = self.to_dict()
        d.pop("out")
        d["training"].pop("bootstrap_resamples")
        d["training"].pop("num_workers")
        d["training"].pop("device")
        d["training"].pop("physical_batch_size")  # memory only (lowered to what fits): never changes the result
        return d


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "privacy": PrivacyConfig, "training": TrainingConfig,
             "synthetic": SyntheticConfig, "tune": TuneConfig}


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts; unknown keys raise :class:`PrivmedError`."""
    reject_unknown(raw, {"out", *_SECTIONS}, "top-level")
    kwargs: dict[str, Any] = {name: section_from_dict(cls, raw.get(name) or {}, name)
                              for name, cls in _SECTIONS.items()}
    if "out" in raw:
        kwargs["out"] = raw["out"] if raw["out"] is None else str(raw["out"])
    return RunConfig(**kwargs)


#: keys added with a new default, and the value a run written before the key existed was trained with
PREDATING_KEYS = {"privacy": {"center": "private"}}


def config_from_run_dict(raw: Mapping[str, Any]) -> RunConfig:
    """The configuration a run directory's ``config.yaml`` (``raw``) was trained with: a key added with a new
    default (:data:`PREDATING_KEYS`) or a model argument recorded since its default changed
    (:func:`privmed.models.registry.predating_args`) takes its old value where the run predates it."""
    from privmed.models.registry import predating_args

    raw = {**raw, **{name: {**old, **(raw.get(name) or {})} for name, old in PREDATING_KEYS.items()}}
    model = dict(raw.get("model") or {})
    model["args"] = {**predating_args(model.get("name", ModelConfig.name)), **(model.get("args") or {})}
    return config_from_dict({**raw, "model": model})


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into nested dicts (empty file -> {})."""
    p = Path(path)
    if not p.is_file():
        raise PrivmedError(f"config file '{p}' does not exist.")
    try:
        raw = safe_yaml.load(p.read_text(encoding="utf-8"), str(p)) or {}
    except UnicodeDecodeError as err:
        from privmed.errors import NOT_UTF8

        raise PrivmedError(NOT_UTF8.format(path=p, position=err.start, byte=hex(err.object[err.start]))) from None
    except yaml.YAMLError as err:
        raise PrivmedError(f"config file '{p}' is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise PrivmedError(f"config file '{p}' must hold a mapping of sections, got {type(raw).__name__}.")
    return raw


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge two nested dicts; values of ``override`` win."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for k, v in override.items():
        out[k] = merge(out.get(k) or {}, v) if isinstance(v, Mapping) else v
    return out


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML."""
    atomic.write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def section_from_dict(cls: type, section: Mapping[str, Any], where: str) -> Any:
    """Build the config dataclass ``cls`` from the mapping ``section`` (named ``where`` in messages):
    unknown keys are refused, values coerced to the fields' types; the dataclass validates the rest.
    Every config of privmed (runs, generators, studies) builds its sections through this."""
    if not isinstance(section, Mapping):
        raise PrivmedError(f"config section '{where}' must be a mapping, got {section!r}.")
    known = {f.name: f for f in fields(cls)}
    reject_unknown(section, set(known), where)
    kwargs = {k: _coerce(v, known[k].type, where, k) for k, v in section.items()}
    return cls(**kwargs)


def _coerce(value: Any, annotation: Any, where: str, key: str) -> Any:
    ann = str(annotation)
    if value is None and "None" in ann:
        return None
    try:
        if value is None:
            raise ValueError("empty (null); give a value or leave the key out")
        if ann.startswith("tuple"):
            items = [value] if isinstance(value, (str, int, float)) else list(value)
            if ann.startswith("tuple[float"):
                return tuple(real(v) for v in items)
            if ann.startswith("tuple[int"):
                return tuple(integer(v) for v in items)
            return tuple(str(v) for v in items)
        if ann.startswith("float"):
            return real(value)
        if ann.startswith("int"):
            return integer(value)
        if ann.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError("not a boolean")
                return value.lower() in ("true", "yes", "1")
            return bool(value)
        if ann.startswith("str"):
            return str(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise PrivmedError(BAD_VALUE.format(where=where, key=key, value=value, why=str(err))) from None
    return value


def integer(value: Any) -> int:
    """``value`` as an int: an int, an integral float or its text; never a boolean (``epochs: yes`` is not 1)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    number = real(value)
    if not number.is_integer():
        raise ValueError("not an integer")
    return int(number)


def real(value: Any) -> float:
    """``value`` as a float: a number or its text; never a boolean, and never a number written too large for a
    float (``1e400``), which would silently become infinity (for epsilon: not private)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, str)):
        raise ValueError(f"a {type(value).__name__}, not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("not a number") from None
    if math.isinf(number) and isinstance(value, str) and value.strip().lstrip("+-").lower() not in ("inf", "infinity"):
        raise ValueError("overflows to infinity; give a finite number (or write inf where infinity is meant)")
    return number


def reject_unknown(section: Mapping[str, Any], known: set[str], where: str) -> None:
    """Refuse keys of ``section`` outside ``known``, naming them and the known ones (:data:`UNKNOWN_KEY`)."""
    unknown = sorted(set(section) - known)
    if unknown:
        raise PrivmedError(UNKNOWN_KEY.format(where=where, keys=unknown, known=sorted(known)))


def require(ok: bool, where: str, key: str, value: Any, why: str) -> None:
    """Refuse ``where.key = value`` unless ``ok``, saying ``why`` (:data:`BAD_VALUE`). The message names the
    config key, which is also what the CLI option sets (``--image-size`` sets ``data.image_size``)."""
    if not ok:
        raise PrivmedError(BAD_VALUE.format(where=where, key=key, value=value, why=why))


def to_plain(obj: Any) -> Any:
    """Plain-YAML form of a config's ``asdict``: tuples as lists, infinity as the string 'inf'."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, float) and math.isinf(obj):
        return "inf"
    return obj
