"""Labels: turning a label column into the 0/1 target of a binary task, with class names.

Which class is positive is the user's choice (``positive_class``: a class name or a label
value), else label 1 of 0/1 labels, else ``malignant`` when two named classes include it.
Class names come from ``class_names``, else from the data (class folders, a manifest's
``class`` column, string labels, the folders a manifest's 0/1 labels agree with one-to-one:
:func:`names_from_folders`), else neutral ``label=0``/``label=1``.
"""

from __future__ import annotations

from pathlib import Path, PurePath

import numpy as np
import pandas as pd

from privmed.config import DataConfig
from privmed.errors import (
    CLASS_NAMES_CLASH,
    NON_BINARY_LABEL,
    POSITIVE_CLASS_NEEDED,
    POSITIVE_CLASS_UNKNOWN,
    PrivmedError,
)

#: a manifest column naming the class of each label value (as ``privmed synth sample`` and the phantom write it)
CLASS_COLUMN = "class"
#: the positive class when two named classes include it and --positive-class is not given
DEFAULT_POSITIVE = "malignant"


def binarise(table: pd.DataFrame, columns: list[str], config: DataConfig, *, source: Path,
             data_names: tuple[str, str] | None = None) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Turn label column(s) into 0/1 target columns; return the target names.

    One column: a binary task. ``positive_class`` picks which class is positive (a class
    name, or a label value such as ``0``); the target is 1 for it, so scores and thresholds
    follow it. Class names come from ``class_names`` (names of the values 0 and 1), else
    from the data (class folders, a manifest's ``class`` column or string labels,
    ``data_names`` of a source that knows them), else neutral ``label=1``; never from a
    default that may be wrong. Several columns: multi-label, each must already be 0/1.
    """
    table = table.copy()
    if len(columns) > 1:
        for c in columns:
            if table[c].isna().any():
                raise PrivmedError(f"label column '{c}' of '{source}' has {int(table[c].isna().sum())} empty "
                                   f"values. Fill or drop those rows.")
            values = set(pd.unique(table[c]))
            if not values <= {0, 1}:
                raise PrivmedError(NON_BINARY_LABEL.format(column=c, values=sorted(map(str, values))))
            table[c] = table[c].astype(int)
        return table, tuple(columns)
    column = columns[0]
    if table[column].isna().any():
        raise PrivmedError(f"label column '{column}' of '{source}' has {int(table[column].isna().sum())} empty "
                           f"values. Fill or drop those rows.")
    values, names = _classes(table, column, config, data_names)
    positive = _positive_index(values, names, config, column=column)
    name = names[positive]
    value = values[positive]
    target = (table[column].astype(float) == value if isinstance(value, int) else table[column].astype(str) == value)
    target = target.astype(int)
    table = table.drop(columns=[c for c in (column, CLASS_COLUMN) if c in table.columns and c != name])
    table[name] = target.to_numpy()
    return table, (name,)


def _classes(table: pd.DataFrame, column: str, config: DataConfig, data_names: tuple[str, str] | None
             ) -> tuple[list, tuple[str, str]]:
    """The two label values (sorted) and their names."""
    raw = pd.unique(table[column])
    numeric = all(isinstance(v, (int, np.integer)) or (isinstance(v, (float, np.floating)) and float(v).is_integer())
                  for v in raw)
    values = sorted({int(v) for v in raw}) if numeric else sorted({str(v) for v in raw})
    if len(values) != 2 and not (len(values) == 1 and numeric and values[0] in (0, 1)):
        raise PrivmedError(NON_BINARY_LABEL.format(column=column, values=[str(v) for v in values]))
    if not numeric:
        if config.class_names is not None and set(config.class_names) != set(values):
            raise PrivmedError(CLASS_NAMES_CLASH.format(given=list(config.class_names), column=column, found=values))
        return values, (values[0], values[1])
    if not set(values) <= {0, 1}:
        raise PrivmedError(NON_BINARY_LABEL.format(column=column, values=[str(v) for v in values]))
    values = [0, 1]
    if config.class_names is not None:
        return values, (config.class_names[0], config.class_names[1])
    names = _names_from_class_column(table, column) or data_names
    if names is not None:
        return values, names
    if column != "label":  # a column named after a class: 1 means that class
        return values, (f"not_{column}", column)
    return values, (f"{column}=0", f"{column}=1")


def _names_from_class_column(table: pd.DataFrame, column: str) -> tuple[str, str] | None:
    """Names of 0 and 1 from a manifest's ``class`` column, when it maps one-to-one to the labels."""
    if CLASS_COLUMN not in table.columns or column == CLASS_COLUMN:
        return None
    pairs = table[[column, CLASS_COLUMN]].drop_duplicates()
    if len(pairs) != 2 or pairs[CLASS_COLUMN].nunique() != 2 or pairs[column].nunique() != 2:
        return None
    by_value = {int(v): str(n) for v, n in zip(pairs[column], pairs[CLASS_COLUMN])}
    return by_value[0], by_value[1]


def _positive_index(values: list, names: tuple[str, str], config: DataConfig, *, column: str) -> int:
    """Which of the two classes is positive: ``positive_class`` as a name or a label value.

    Unset: label 1 for 0/1 labels; for two named classes, ``malignant`` when it is one of
    them (the data says so), otherwise the user must choose.
    """
    wanted = config.positive_class
    if wanted is None:
        if values == [0, 1]:
            return 1
        if DEFAULT_POSITIVE in names:
            return names.index(DEFAULT_POSITIVE)
        raise PrivmedError(POSITIVE_CLASS_NEEDED.format(column=column, names=list(names)))
    if wanted in names:
        return names.index(wanted)
    if wanted in map(str, values):
        return [str(v) for v in values].index(wanted)
    raise PrivmedError(POSITIVE_CLASS_UNKNOWN.format(wanted=wanted, column=column, names=list(names),
                                                     values=[str(v) for v in values]))


def names_from_folders(table: pd.DataFrame, columns: list[str], config: DataConfig
                       ) -> tuple[tuple[str, str], str] | None:
    """Names of 0/1 labels taken from a folder level of a manifest's ``path`` column, and where that level is.

    Only where the names would otherwise be neutral (no ``class_names``, no ``class`` column, one label
    column ``label`` of 0/1 values) and exactly one folder level agrees with the labels one-to-one, as
    CBIS-DDSM's ``images/<split>/benign|malignant/...`` with label 0/1 does; otherwise None.
    """
    if (config.class_names is not None or CLASS_COLUMN in table.columns or list(columns) != ["label"]
            or "path" not in table):
        return None
    labels = table[columns[0]]
    if not pd.api.types.is_numeric_dtype(labels) or labels.isna().any() or set(labels.astype(float)) != {0.0, 1.0}:
        return None
    folders = [PurePath(str(p).replace("\\", "/")).parent.parts for p in table["path"]]
    found = {}
    for level in range(min(len(f) for f in folders)):
        pairs = pd.DataFrame({"label": labels.astype(int).to_numpy(), "folder": [f[level] for f in folders]})
        pairs = pairs.drop_duplicates()
        if len(pairs) == 2 and pairs["folder"].nunique() == 2:
            by_value = dict(zip(pairs["label"], pairs["folder"]))
            above = [folders[0][i] if len({f[i] for f in folders}) == 1 else "*" for i in range(level)]
            found[(str(by_value[0]), str(by_value[1]))] = "/".join([*above, f"{by_value[0]}|{by_value[1]}"])
    if len(found) != 1:  # none, or two levels naming the classes differently: do not guess
        return None
    return next(iter(found.items()))
