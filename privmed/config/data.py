"""The ``data`` section: where the images are and how to read them."""

from __future__ import annotations

from dataclasses import dataclass

from privmed import rundir

from .values import MAX_SEED, require

#: largest image side (2D) and volume side (3D) privmed reads: beyond, memory runs out before a message could
MAX_IMAGE_SIZE = {2: 1024, 3: 256}
SPATIAL_DIMS = tuple(MAX_IMAGE_SIZE)
#: ``data.stream``: decode image files per batch (on), all at once (off), or on when they would not fit (auto)
STREAM_SETTINGS = ("auto", "on", "off")


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
    stream: str = "auto"  # image files decoded per batch: on, off, auto (when large; privmed.data.lazy.streams)

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
        require(self.stream in STREAM_SETTINGS, "data", "stream", self.stream,
                "use auto (decode image files per batch when all of them would take more than 1 GiB), on or off")
        require(self.phantom_samples >= 100, "data", "phantom_samples", self.phantom_samples, "must be >= 100")
        require(0 <= self.seed <= MAX_SEED, "data", "seed", self.seed, f"must be an integer from 0 to {MAX_SEED}")
        if self.class_names is not None and len(self.class_names) == 1 and "," in self.class_names[0]:
            object.__setattr__(self, "class_names", tuple(n.strip() for n in self.class_names[0].split(",")))
        require(self.class_names is None or (len(self.class_names) == 2 and len(set(self.class_names)) == 2
                                             and all(self.class_names)), "data", "class_names", self.class_names,
                "give two different names, of the label values 0 and 1 in that order (e.g. benign,malignant)")
        rundir.check_folder_names(self.class_names or (), "data.class_names, --class-names")
