"""One exception type for every user-facing error.

The CLI catches :class:`PrivmedError`, prints its message (which always says
what to do) and exits with status 2. Anything else is a bug and keeps its
traceback. Message templates live here so tests can import them.
"""


class PrivmedError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


PATH_MISSING = "{what} '{path}' does not exist. Check the path (it is resolved relative to {cwd})."
RUN_DATA_MISSING = ("run '{run}' recorded its data as '{path}', which does not exist from {cwd} (a relative "
                    "path is relative to where the run was trained). Pass --data with the data set's path.")
EMPTY_CLASS_FOLDER = "class folder '{path}' contains no images. Remove the folder or add images (.png, .jpg, .dcm, .nii, .nii.gz)."
UNREADABLE_IMAGE = "cannot read image '{path}': {reason}. Replace or remove the file."
MISSING_COLUMN = "manifest '{path}' has no column '{column}' (columns: {columns}). Name the label column with --label-column."
NON_BINARY_LABEL = "label column '{column}' holds values {values}; a binary task needs exactly 0/1 (or two class names)."
POSITIVE_CLASS_NEEDED = ("label column '{column}' holds the classes {names}: say which one is positive with "
                         "--positive-class (data.positive_class).")
POSITIVE_CLASS_UNKNOWN = ("--positive-class '{wanted}' is neither a class of label column '{column}' ({names}) nor one "
                          "of its label values ({values}). Pass one of them; name 0/1 labels with --class-names.")
CLASS_NAMES_CLASH = ("--class-names {given} names 0/1 labels, but label column '{column}' already holds the named "
                     "classes {found}. Drop --class-names, or use those names.")
ONE_CLASS_SPLIT = "split '{split}' contains only class {cls} ({n} samples): AUROC is undefined. Re-split so every split has both classes."
PATIENT_OVERLAP = "patients appear in more than one split: {patients}. Splits must be patient-disjoint; move all images of a patient to one split."
DELTA_TOO_LARGE = "delta={delta:g} is not below 1/N = 1/{n} = {bound:.3g}. Use a smaller --delta (default is 1/(10 N))."
EPSILON_NOT_POSITIVE = "epsilon={epsilon:g} must be > 0. Omit --epsilon (or pass inf) for non-private training."
EPSILON_UNREACHABLE = (
    "epsilon={epsilon:g} cannot be reached by this schedule ({steps} steps at sample rate {sample_rate:.4g}, "
    "delta={delta:g}): even a noise multiplier of {sigma:g} spends more. Raise --epsilon, train fewer --epochs, "
    "or use a smaller --batch-size.{prior}"
)
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
OUT_NOT_EMPTY = "output directory '{path}' already holds a run. Pass --resume to continue it, or choose another --out."
FOLDER_NOT_EMPTY = ("'{path}' is not an empty folder, and {what} are written only to a new or empty one so that nothing "
                    "is overwritten. Choose another {option}, or remove it first.")
TOO_FEW_IMAGES = "--n {n}: {what} needs at least {minimum} images (half of each class)."
TOO_FEW_SYNTHETIC = ("{counts} synthetic images of each class: measuring their quality needs at least {minimum} "
                     "of each class. Draw more from the generator (--n) or give a larger folder.")
SMALL_SPLIT = ("split '{split}' has only {n} sample(s) of its rarest class (fewer than {minimum}): its metrics and "
               "CIs are unreliable (an AUROC of 0 or 1 with a zero-width CI can be chance). Evaluate on a larger split.")
