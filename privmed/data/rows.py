"""Checks of the values in a data set's ``split`` and ``patient_id`` columns.

Patient ids are strings, compared as written ("007" and "7" are two patients); ids that differ only by
case or surrounding spaces ("P1", "p1 ") are refused across splits, as likely the same patient. A manifest
row without a patient id (when the manifest has the column) or with a blank or unknown split is refused,
never dropped or merged into one patient "nan".
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from privmed.errors import (PATIENT_ID_MISSING, PATIENT_IDS_ALIKE, PATIENT_OVERLAP, SPLIT_UNKNOWN,
                            PrivmedError)


def _shown(items: list[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_patient_disjoint(table: pd.DataFrame) -> None:
    """Raise if any patient id appears in more than one split, also written with another case or spaces."""
    known = table.dropna(subset=["patient_id"])
    ids = known["patient_id"].astype(str)
    per_patient = known.groupby(ids)["split"].nunique()
    shared = sorted(per_patient[per_patient > 1].index.astype(str))
    if shared:
        raise PrivmedError(PATIENT_OVERLAP.format(patients=_shown(shared)))
    key = ids.str.strip().str.casefold()
    alike = []
    for _, group in pd.DataFrame({"id": ids.to_numpy(), "split": known["split"].to_numpy()}).groupby(key.to_numpy()):
        spellings = group.drop_duplicates("id")
        if len(spellings) > 1 and group["split"].nunique() > 1:
            alike.append(" and ".join(f"{i!r} ({split})" for i, split in zip(spellings["id"], spellings["split"])))
    if alike:
        raise PrivmedError(PATIENT_IDS_ALIKE.format(patients=_shown(sorted(alike), limit=5)))


def check_manifest_rows(table: pd.DataFrame, manifest: Path, *, split_column: str, patient_column: str) -> None:
    """Every row of a manifest with a split column has a split, and with a patient column a patient id."""
    for column, message in ((split_column, SPLIT_UNKNOWN), (patient_column, PATIENT_ID_MISSING)):
        if column not in table.columns:
            continue
        values = table[column]
        blank = values.isna() | values.astype(str).str.strip().eq("")
        if blank.any():
            row = int(blank.to_numpy().nonzero()[0][0])
            raise PrivmedError(message.format(path=manifest, n=int(blank.sum()), column=column, row=row + 2,
                                              value="" if pd.isna(values.iloc[row]) else values.iloc[row]))


def check_split_names(table: pd.DataFrame, known: tuple[str, ...], *, source: str) -> None:
    """Every row's split is one of ``known`` (train, val, test): a row of another split would be left out."""
    splits = table["split"]
    unknown = splits.notna() & ~splits.isin(known)
    if unknown.any():
        row = int(unknown.to_numpy().nonzero()[0][0])
        raise PrivmedError(SPLIT_UNKNOWN.format(path=source, n=int(unknown.sum()), column="split", row=row + 2,
                                                value=splits.iloc[row]))
