"""One exception type for every user-facing error.

The CLI catches :class:`PrivmedError`, prints its message (which always says
what to do) and exits with status 2. Anything else is a bug and keeps its
traceback. Message templates live here so tests can import them.
"""


import functools
import re
import string


class PrivmedError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


PATH_MISSING = "{what} '{path}' does not exist. Check the path (it is resolved relative to {cwd})."
RUN_DATA_MISSING = ("run '{run}' recorded its data as '{path}', which does not exist from {cwd} (a relative "
                    "path is relative to where the run was trained). Pass --data with the data set's path.")
EMPTY_CLASS_FOLDER = "class folder '{path}' contains no images. Remove the folder or add images (.png, .jpg, .dcm, .nii, .nii.gz)."
UNREADABLE_IMAGE = "cannot read image '{path}': {reason}. Replace or remove the file."
NOT_UTF8 = "'{path}' is not UTF-8 text (byte {position}: {byte}). Save it as UTF-8 and try again."
MANIFEST_NOT_CSV = "manifest '{path}' is not a readable CSV ({reason}). Fix the file."
MISSING_COLUMN = "manifest '{path}' has no column '{column}' (columns: {columns}). Name the label column with --label-column."
NON_BINARY_LABEL = "label column '{column}' holds values {values}; a binary task needs exactly 0/1 (or two class names)."
POSITIVE_CLASS_NEEDED = ("label column '{column}' holds the classes {names}: say which one is positive with "
                         "--positive-class (data.positive_class).")
POSITIVE_CLASS_UNKNOWN = ("--positive-class '{wanted}' is neither a class of label column '{column}' ({names}) nor one "
                          "of its label values ({values}). Pass one of them; name 0/1 labels with --class-names.")
CLASS_NAMES_CLASH = ("--class-names {given} names 0/1 labels, but label column '{column}' already holds the named "
                     "classes {found}. Drop --class-names, or use those names.")
CLASS_NAMES_FROM_FOLDERS = ("'{manifest}': label {column} 0 is '{zero}' and 1 is '{one}', named after the folders its "
                            "images lie in ({where}); name them otherwise with --class-names NAME0,NAME1.")
TARGET_MISMATCH = ("the data's target is {data} but the run predicts {run}. Say which class of the data is the run's "
                   "positive class with --positive-class NAME, or name the run's labels 0 and 1 with --class-names "
                   "NAME0,NAME1 (another label column of a manifest: --label-column).")
ONE_CLASS_SPLIT = "split '{split}' contains only class {cls} ({n} samples): AUROC is undefined. Re-split so every split has both classes."
DUPLICATE_PATHS = ("manifest '{path}' lists {n} image(s) more than once (first: '{example}'). Each image must be "
                   "one row, or N and the per-sample privacy guarantee are wrong: remove the duplicate rows.")
IDENTICAL_ACROSS_SPLITS = ("{n} image(s) of split '{a}' are pixel-identical to images of split '{b}' (first: '{x}' "
                           "and '{y}'): the same image would be trained on and tested on. Remove the copies, or give "
                           "patient ids so that copies of one patient stay in one split.")
OUTSIDE_DATA_ROOT = ("manifest '{path}' lists {n} image(s) outside its folder '{root}' (first: '{example}'). Move "
                     "them under it, or allow it with data.allow_outside_root: true (--allow-outside-data-root).")
PATIENT_IDS_ALIKE = ("patient ids that differ only by case or surrounding spaces are in different splits: {patients}. "
                     "If they are one patient, write the id one way and keep the patient in one split; if not, "
                     "give them ids that differ otherwise.")
PATIENT_ID_MISSING = ("manifest '{path}' has {n} row(s) without a patient id in column '{column}' (first: line {row}, "
                      "'{value}'). Give every row its patient's id (blank and NA are not ids), or drop the column "
                      "to treat each image as its own patient.")
SPLIT_UNKNOWN = ("'{path}' has {n} row(s) whose {column} is blank or not one of train, val, test (first: line {row}, "
                 "'{value}'); they would be left out. Give each row one of those splits, or drop the split column "
                 "so that privmed splits the data.")
PATIENT_OVERLAP = "patients appear in more than one split: {patients}. Splits must be patient-disjoint; move all images of a patient to one split."
DELTA_TOO_LARGE = "delta={delta:g} is not below 1/N = 1/{n} = {bound:.3g}. Use a smaller --delta (default is 1/(10 N))."
EPSILON_NOT_POSITIVE = "epsilon={epsilon:g} must be > 0. Omit --epsilon (or pass inf) for non-private training."
EPSILON_NOT_A_NUMBER = ("epsilon={epsilon} is not a number. Give a positive number, or omit --epsilon (or pass inf) "
                        "for non-private training.")
EPSILON_UNREACHABLE = (
    "epsilon={epsilon:g} cannot be reached by this schedule ({steps} steps at sample rate {sample_rate:.4g}, "
    "delta={delta:g}): even a noise multiplier of {sigma:g} spends more. Raise --epsilon, train fewer --epochs, "
    "or use a smaller --batch-size.{prior}"
)
TOTAL_EPSILON_SPENT_UPSTREAM = (
    "total_epsilon={total:g} is already spent by the upstream stages this run composes ({stages}: epsilon={spent:.3g} "
    "at delta={delta:g}), before this run's own stages. Raise --total-epsilon above {spent:.3g}, or use synthetic "
    "images from a generator trained at a smaller epsilon (or the phantom, which costs nothing).")
EPSILON_AND_TOTAL_EPSILON = (
    "privacy.epsilon and privacy.total_epsilon are both given: epsilon targets this run's own stages (upstream ones "
    "are composed on top), total_epsilon the run together with the upstream records it uses. Give one of them "
    "(--epsilon or --total-epsilon).")
BATCH_LARGER_THAN_DATA = ("--batch-size {batch} is larger than the {n} training images an epoch can use (at the "
                          "patient unit, at most --max-images-per-patient of each patient): every step would use all "
                          "of them (sample rate 1, no subsampling). Use a --batch-size of at most {n}.")
BATCH_TOO_LARGE = (
    "a physical batch of {batch} does not fit in memory ({reason}). Pass a smaller --physical-batch-size, "
    "e.g. {suggest}; the logical batch (--batch-size) and the privacy guarantee stay the same."
)
BATCH_NEVER_FITS = (
    "{what}: one training sample needs about {need}, more than {share}% of the {available} of memory available. "
    "Use a smaller --image-size (a 3D volume's memory grows with its cube: 64³ needs 8x what 32³ does) or a smaller "
    "--model, or run on a machine with more memory."
)
PHYSICAL_BATCH_LOWERED = (
    "physical batch {requested} does not fit in memory ({available} available, about {per_sample} a sample): "
    "training with physical batches of {chosen} instead; the logical batch ({logical}), the noise and the privacy "
    "guarantee are unchanged."
)
RESUME_NOTHING = "--resume was given but '{path}' holds no run to resume. Drop --resume to start a fresh run there."
RESTARTED = ("'{path}' holds a run that stopped before its first checkpoint (no model of it exists, nothing was "
             "released): starting it again from the beginning.")
RESUME_CONFIG_CHANGED = (
    "cannot resume '{path}': the configuration changed ({changes}). Resume with the original options, "
    "or start a new run in another --out directory."
)
CHECKPOINT_UNREADABLE = ("checkpoint '{path}' cannot be read ({reason}); it is truncated or not a privmed checkpoint. "
                         "{fix}")
CHECKPOINT_UNSAFE = ("checkpoint '{path}' holds {what}, which no privmed checkpoint holds: privmed loads only "
                     "weights, numbers and text from a checkpoint and never runs code from one. The file was not "
                     "written by privmed or was altered (do not load it elsewhere either). {fix}")
CLASS_NAME_UNSAFE = ("class name {name!r} ({where}) cannot name a folder: {why}. Class names become folder and file "
                     "names: give names without path separators or '..', without control characters, of at most "
                     "{limit} characters (e.g. --class-names benign,malignant).")
CONFIG_UNREADABLE = ("'{path}' is not a readable run configuration ({reason}). Restore it from the run's original "
                     "options, or train the run again.")
LEDGER_CHANGED = ("'{path}' is not the privacy ledger training wrote (its digest in '{seal}' differs, or it is "
                  "missing): the run's privacy claim cannot be trusted. Restore the original file, or train the run "
                  "again.")
SEAL_BROKEN = ("'{path}' is not the record privmed sealed (its seal in '{seals}' fails under this machine's key: it "
               "was edited, replaced, moved in from another folder, or removed): its claims cannot be trusted. "
               "Restore the original file, or run the command that wrote it again.")
SEALS_UNREADABLE = ("'{path}' is not a readable seals file ({reason}): the records beside it cannot be checked. "
                    "Restore it, or run the command that wrote the folder again.")
SEAL_KEY_UNREADABLE = ("the seal key '{path}' cannot be used ({reason}). Fix or remove the file (privmed then makes "
                       "a new key; records sealed under the old one read as unverified), or point {env} at the "
                       "team's key.")
RESUME_DATA_CHANGED = ("cannot resume '{path}': {changes}, since the interrupted run started; the privacy already "
                       "spent was accounted for the data and settings it started with. Resume with the original "
                       "data and settings, or start a new run in another --out directory.")
PRIVACY_RECORD_MISSING = ("'{path}' does not exist: there is no privacy record (privacy.json) there. Point at the folder "
                          "of a finished run, generator or synthetic sample (privmed writes the record last), or run "
                          "the command that makes it again.")
PRIVACY_RECORD_MALFORMED = ("'{path}' is not a privacy record privmed wrote ({reason}): it was edited or comes from "
                            "elsewhere. Restore it, or run the command that wrote it again.")
METRICS_MISSING = ("'{path}' does not exist: the run has no metrics yet. Point at the folder of a finished run "
                   "(`privmed train` writes metrics.json when it ends), or finish it with `privmed train --resume`.")
JSON_UNREADABLE = ("'{path}' is not valid JSON ({reason}): it was cut short or edited. Restore it, or run the command "
                   "that wrote it again.")
OUT_NOT_WRITABLE = ("cannot write to '{path}': {reason}. Choose an --out in a folder you can write to "
                    "(checked before any work starts).")
GRID_FOLDER_MISSING = ("the folder '{folder}' of --grid '{path}' does not exist; privmed does not create folders "
                       "for a single file. Create it first, or choose a path in an existing folder.")
BAD_DEVICE = "--device {device}: {reason}. Use auto (the default), cpu, cuda or cuda:N for a GPU this machine has."
WORKERS_NOT_POSITIVE = "--workers {n}: give at least 1 worker process (default: the study's 'workers', else 1)."
BOOTSTRAP_TOO_FEW = "--bootstrap {n}: a 95% confidence interval needs at least {minimum} resamples (default 1000)."
OUT_NOT_EMPTY = "output directory '{path}' already holds a run. Pass --resume to continue it, or choose another --out."
FOLDER_NOT_EMPTY = ("'{path}' is not an empty folder, and {what} are written only to a new or empty one so that nothing "
                    "is overwritten. Choose another {option}, or remove it first.")
TOO_FEW_IMAGES = "--n {n}: {what} needs at least {minimum} images (half of each class)."
TOO_FEW_SYNTHETIC = ("{counts} synthetic images of each class: measuring their quality needs at least {minimum} "
                     "of each class. Draw more from the generator (--n) or give a larger folder.")
RESUME_OTHER_UNIT = ("cannot resume '{path}': it was trained with privacy unit '{recorded}' and this run resolves to "
                     "'{unit}'. Resume with --privacy-unit {recorded}, or start a new run in another --out directory.")
RUN_BUSY = ("run folder '{path}' is in use by another privmed train (process {pid}): two runs into one --out would "
            "overwrite each other. Wait for it to finish (then --resume continues it), or choose another --out.")
STUDY_BUSY = ("study folder '{path}' is in use by another privmed study (process {pid}). Wait for it to finish, "
              "or stop it, before running a study into the same --out.")
# a YAML file privmed reads (privmed/safe_yaml.py): no key twice, no runaway aliases
YAML_DUPLICATE_KEY = ("'{where}' line {line}: the key '{key}' appears twice in one mapping (first on line "
                      "{first}); YAML would silently keep only the last one. Remove one of them.")
YAML_TOO_MANY_ALIASES = ("'{where}' expands to more than {limit:,} values through its aliases (*name): privmed "
                         "refuses it rather than fill memory. Write the values out, or use fewer nested aliases.")

# the audit's settings come from `privmed audit` options or a study file's audit section: messages name both
AUDIT_CANARIES = ("audit.canaries = {canaries} (--canaries): use 0 (train-vs-test diagnostic only, no epsilon bound) "
                  "or at least 2 canaries (each goes into training by a fair coin), e.g. 500.")
AUDIT_SHADOWS = ("audit.shadows = {shadows} (--shadows): use 0 (loss attack only) or at least 2 shadow models for "
                 "LiRA, e.g. 8.")
AUDIT_CANARY_KIND = "audit.canary_kind = {kind!r} (--canary-kind): use one of {known}."
AUDIT_CANARY_SIZE = ("--images-per-canary {size} with --canary-kind {kind}: a canary needs at least one image, and "
                     "canaries of several images (patients) must be crafted. Use --canary-kind crafted, or 1 image.")
AUDIT_GROUP_NEEDS_PATIENT_UNIT = (
    "--images-per-canary {size}: a canary of several images is one patient, but this run protects each {unit}, so "
    "its claimed epsilon does not cover a group of images. Use --images-per-canary 1, or audit a run trained "
    "with privacy.unit: patient.")

IMAGE_BOOTSTRAP = ("the data has no patient ids, so its CIs resample images, not patients: several images of one "
                   "patient make them too narrow. For patient-level CIs give a CSV manifest with a patient_id column.")
SMALL_SPLIT = ("split '{split}' has only {n} sample(s) of its rarest class (fewer than {minimum}): its metrics and "
               "CIs are unreliable (an AUROC of 0 or 1 with a zero-width CI can be chance). Evaluate on a larger split.")


def error_kind(message: str) -> str:
    """What kind of error ``message`` is, in words that carry none of its text (a patient id, file name
    or path in it never reaches a report): the name of the message template it was made from, the
    exception type of a crash, or "refused input". A kind is its own kind (``status.json`` and ``results.csv``
    hold kinds, and older ones may hold the text)."""
    if not message:
        return ""
    first = message.splitlines()[0]
    if first == "refused input" or re.fullmatch(r"crash \([A-Z]\w*\)", first) or \
            first in {name.lower().replace("_", " ") for name, _ in _template_patterns()}:
        return first
    for name, pattern in _template_patterns():
        if pattern.fullmatch(first):
            return name.lower().replace("_", " ")
    crash = re.match(r"([A-Z]\w*(?:Error|Exception|Interrupt|Exit))\b", first)
    return f"crash ({crash.group(1)})" if crash else "refused input"


@functools.cache
def _template_patterns() -> list[tuple[str, "re.Pattern[str]"]]:
    patterns = []
    for name, value in globals().items():
        if name.isupper() and isinstance(value, str) and "{" in value:
            pieces = [re.escape(text) + (".*" if field is not None else "")
                      for text, field, _, _ in string.Formatter().parse(value)]
            patterns.append((name, re.compile("".join(pieces), re.DOTALL)))
    return patterns

# --------------------------------------------------------------------------- models (issue 18)
WEIGHTS_MISSING = ("weights file '{path}' does not exist. Give model.weights (--model-weights) the path of a state "
                   "dict saved with torch.save(model.state_dict(), PATH) (or a checkpoint holding one).")
WEIGHTS_UNREADABLE = ("cannot read weights file '{path}': {reason}. Save the weights as tensors only: "
                      "torch.save(model.state_dict(), PATH).")
WEIGHTS_KEYS_MISMATCH = ("weights file '{path}' does not fit model {model}: missing keys: {missing}; unexpected "
                         "keys: {unexpected}; other shapes: {shapes}. Choose the model (and model.args) the weights "
                         "were saved from.")
WEIGHTS_CHANGED = ("weights file '{path}' is not the one this run was trained from (SHA-256 {now}..., the run recorded "
                   "{recorded}...): its frozen backbone would give other features than the head was trained on. Put "
                   "the original file back at that path.")
MODEL_ARG_UNKNOWN = ("model {model!r} takes no argument {args}; it accepts: {accepted}. ({filled} come from the data; "
                     "see docs/models.md.)")
MODEL_ARG_FILLED = ("model.args {args} of model {model!r} come from the data (image size, channels, labels); leave "
                    "them out{why}.")
OPACUS_UNSUPPORTED_LAYER = ("layer '{layer}' ({kind}) of model {model!r} cannot be trained with DP-SGD: {reason} "
                            "Freeze the backbone (--freeze backbone: it runs in eval mode and only the head is "
                            "trained), give the network a per-sample norm (e.g. --model-arg norm=instance for MONAI "
                            "networks that take `norm`), or set model.replace_batchnorm (--replace-batchnorm): "
                            "Opacus's ModuleValidator.fix swaps BatchNorm for GroupNorm, whose weights start "
                            "untrained even when the rest is pretrained.")
NOT_A_CLASSIFIER = ("MONAI's {name} returns outputs of shape {shape}, not one score per label: it is not a classifier "
                    "(a segmentation network?). Choose a classification network (e.g. monai:DenseNet121) or a "
                    "feature backbone without an output argument (e.g. monai:ResNetFeatures).")
MLFLOW_MISSING = ("MLflow tracking needs the 'mlflow-skinny' package: pip install 'privmed[tracking]' (or pip install "
                  "mlflow-skinny), or leave out --mlflow / --mlflow-uri.")
MLFLOW_UNAVAILABLE = "cannot start an MLflow run at '{uri}': {reason}. Check --mlflow-uri (a folder or a server)."

# --------------------------------------------------------------------------- hostile input (issue 34)
NPZ_UNREADABLE = ("'{path}' is not a readable .npz file ({reason}): it is truncated or not made by numpy.savez. "
                  "Save it again with numpy.savez_compressed.")
NPZ_BAD_ARRAY = ("'{path}': array '{key}' {problem}. Save {split} images as a numeric (N, H, W) or (N, D, H, W) "
                 "array and its labels as N numbers (or an (N, L) array for L labels), every split alike.")
NPZ_PIXEL_RANGE = ("'{path}': {key} holds {dtype} values from {lo:g} to {hi:g}; privmed reads integer images by "
                   "their type's range (uint8: 0-255, uint16: 0-65535) and float images in [0, 1] (or [0, 255]). "
                   "Scale them into one of these ranges.")
NON_FINITE_PIXELS = ("{what} holds {n} NaN or infinite pixel value(s): training on it would fail after it began. "
                     "Replace or remove the image{s}.")
SPLIT_NOT_A_NAME = ("--split {split!r}: a split is a plain name (letters, digits, '_', '-'), e.g. test: it names the "
                    "folder the evaluation is written to (RUN/evaluations/<data>/<split>).")
OUT_EMPTY = "--out '' names no folder. Give the folder to write to, e.g. --out runs/eps1."
PATH_BLANK = ("manifest '{path}' has {n} row(s) without an image path in column '{column}' (first: line {row}). "
              "Give every row its image's path, or drop the row.")

# --------------------------------------------------------------------------- faults (issue 34)
DISK_FULL = ("no space left on the disk at '{mount}' while writing '{path}': that file was not written, nothing "
             "was overwritten and no partial file was left. Free space on that disk (or choose an --out on "
             "another one) and run the command again; an interrupted run continues with --resume.")
FOLDER_NOT_WRITABLE = ("cannot write '{path}': {reason} (the folder '{folder}' is read-only to this user). Make it "
                       "writable, or copy what it holds to a folder you can write to and run the command there.")
ACCESS_DENIED = ("cannot use '{path}': {reason}. Make it (and its folder) readable and writable by this user, or "
                 "copy what you need to a folder you can write to and run the command there.")
WORKER_KILLED = ("worker killed: the study's worker process running {run} died (kill -9, or the out-of-memory "
                 "killer) and the runs it shared a pool with were stopped; the study went on with the others. Re-run "
                 "the study to continue them from their last checkpoints.")

YAML_FLOAT_OVERFLOW = ("'{where}' line {line}: {text} is too large for a number and would read as infinity (for "
                       "epsilon: not private); write a finite value, or .inf if infinity is meant.")

# --------------------------------------------------------------------------- config versions (issue 33)
CONFIG_VERSION_NEWER = ("config_version {version}: this configuration was written by a newer privmed, which reads "
                        "up to version {current}; its keys may mean what this privmed cannot tell. Upgrade privmed "
                        "(pip install -U privmed) to read it.")
CONFIG_VERSION_BAD = ("config_version {value!r}: give the whole number a run's config.yaml records (1 to {current}), "
                      "or leave the key out (today's version).")
FEATURE_CACHE_ENV_OFF = ("PRIVMED_CACHE=off: PRIVMED_CACHE only names the default folder of the frozen-feature cache; "
                        "turn the cache off in the run's config, where config.yaml records it: --feature-cache off "
                        "(training.feature_cache: off). Then unset PRIVMED_CACHE.")

# --------------------------------------------------------------------------- backbones (issue 35)
BACKBONES_MISSING = ("timm: and torchvision: models and --freeze lora need the backbones extra, and {module} does not "
                     "import here "
                     "({reason}). PyPI's torchvision needs the torch it was built with: install the pair into its "
                     "own environment, e.g. python -m venv .venv-backbones && .venv-backbones/bin/pip install "
                     "torch==2.14.1 torchvision==0.29.1 && .venv-backbones/bin/pip install -e '.[backbones]' "
                     "(make test-backbones does this; docs/backbones.md).")
BACKBONE_UNKNOWN = ("{library} has no model {name!r}; some it has: {some}, ... (timm.list_models(), "
                    "torchvision.models.list_models()).")
FREEZE_NOT_APPLICABLE = ("model.freeze = {freeze!r} does not apply to model {model!r}: {reason} Use another "
                         "--freeze (none, backbone, last_block, bias, lora; docs/backbones.md).")
