"""Data sources: every format, and every bad input with one clear message."""

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import CBIS, requires_cbis
from privmed.config import DataConfig
from privmed.data.images import read_image
from privmed.data.sources import load_dataset
from privmed.errors import PrivmedError


def write_png(path, value=128, size=20, mark=None):
    """A two-tone image; ``mark`` (an int) paints one more pixel so that images differ (copies across
    splits are refused)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size), value, dtype=np.uint8)
    arr[: size // 2] = 255 - value
    if mark is not None:
        arr[size // 2 + mark // size % (size // 2), mark % size] = (value + 128) % 256
    Image.fromarray(arr).save(path)


def class_tree(root, splits=("train", "val", "test"), n=4):
    for s, split in enumerate(splits):
        for c, cls in enumerate(("benign", "malignant")):
            for i in range(n):
                write_png(root / split / cls / f"{cls}_{i}.png", value=40 if cls == "benign" else 200,
                          mark=(s * 2 + c) * n + i)
    return root


def test_class_folder_tree_with_splits(tmp_path):
    ds = load_dataset(DataConfig(path=str(class_tree(tmp_path / "d")), image_size=16))
    assert ds.images.shape == (24, 16, 16)
    assert ds.label_names == ("malignant",)
    assert set(ds.table["split"]) == {"train", "val", "test"}
    assert ds.table.loc[ds.table["sample_id"].str.contains("malignant"), "malignant"].eq(1).all()


def test_class_folder_tree_without_splits_is_split_at_random(tmp_path):
    root = class_tree(tmp_path / "d", splits=(), n=0)
    for cls in ("benign", "malignant"):
        for i in range(20):
            write_png(root / cls / f"{i}.png", mark=i + 20 * (cls == "malignant"))
    ds = load_dataset(DataConfig(path=str(root), image_size=16))
    assert set(ds.table["split"]) == {"train", "val", "test"}


def test_manifest_with_attributes_and_patients(phantom_root):
    ds = load_dataset(DataConfig(path=str(phantom_root), image_size=32))
    assert "breast_density" in ds.attribute_columns and "age" in ds.attribute_columns
    assert "patient_id" not in ds.attribute_columns and "label" not in ds.attribute_columns
    assert ds.patient_ids is not None


def test_multilabel_manifest(tmp_path):
    rows = []
    for i in range(30):
        split = ["train", "val", "test"][i % 3]
        write_png(tmp_path / f"img{i}.png", value=i * 7)
        rows.append({"path": f"img{i}.png", "split": split, "effusion": i % 2, "edema": (i // 3) % 2, "sex": "F"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    ds = load_dataset(DataConfig(path=str(tmp_path / "manifest.csv"), label_columns=("effusion", "edema"),
                                 image_size=16))
    assert ds.label_names == ("effusion", "edema")
    assert ds.labels.shape == (30, 2)
    assert ds.attribute_columns == ("sex",)


def test_medmnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(tmp_path / "toy.npz", **arrays)
    ds = load_dataset(DataConfig(path=str(tmp_path / "toy.npz"), image_size=32))
    assert ds.images.shape == (40, 32, 32) and ds.images.max() <= 1.0
    assert ds.patient_ids is None


def _toy_npz(path, *, positives_of_zero: int = 0):
    """0/1 labels; the first ``positives_of_zero`` of each split are label 0, the rest alternate."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(path, **arrays)
    return path


def test_npz_labels_get_neutral_names_never_malignant_by_default(tmp_path):
    ds = load_dataset(DataConfig(path=str(_toy_npz(tmp_path / "toy.npz")), image_size=16))
    assert ds.label_names == ("label=1",)
    raw = np.load(tmp_path / "toy.npz")["train_labels"][:, 0]
    assert (ds.split("train").labels[:, 0] == raw).all()


@pytest.mark.parametrize("positive,names,expected", [("0", ("malignant", "benign"), "malignant"),
                                                     ("malignant", ("malignant", "benign"), "malignant"),
                                                     ("0", None, "label=0"),
                                                     ("1", ("malignant", "benign"), "benign")])
def test_positive_class_chooses_the_label_value_and_targets_follow(tmp_path, positive, names, expected):
    """BreastMNIST's case: label 0 = malignant. --positive-class 0 makes label 0 the positive class."""
    path = _toy_npz(tmp_path / "toy.npz")
    ds = load_dataset(DataConfig(path=str(path), image_size=16, positive_class=positive, class_names=names))
    assert ds.label_names == (expected,)
    raw = np.load(path)["test_labels"][:, 0]
    positive_value = 0 if expected in ("malignant", "label=0") else 1
    assert (ds.split("test").labels[:, 0] == (raw == positive_value)).all()


def test_float_labels_and_a_named_0_1_column(phantom_root):
    table = pd.read_csv(phantom_root / "metadata.csv").drop(columns=["class"])
    table["label"] = table["label"].astype(float)
    table.to_csv(phantom_root / "float.csv", index=False)
    ds = load_dataset(DataConfig(path=str(phantom_root / "float.csv"), image_size=32, positive_class="0"))
    # label 0/1 under images/<split>/benign|malignant/: the folders name the classes
    assert ds.label_names == ("benign",) and (ds.labels[:, 0] == (table["label"] == 0)).all()
    table.rename(columns={"label": "tumour"}).to_csv(phantom_root / "named.csv", index=False)
    named = load_dataset(DataConfig(path=str(phantom_root / "named.csv"), image_size=32, label_columns=("tumour",)))
    assert named.label_names == ("tumour",) and (named.labels[:, 0] == table["label"]).all()


def test_unknown_positive_class_says_what_exists(tmp_path):
    with pytest.raises(PrivmedError, match=r"--positive-class 'tumour' is neither.*label=0.*--class-names"):
        load_dataset(DataConfig(path=str(_toy_npz(tmp_path / "t.npz")), image_size=16, positive_class="tumour"))


def test_class_names_from_cli_text():
    assert DataConfig(class_names=("malignant,benign",)).class_names == ("malignant", "benign")
    with pytest.raises(PrivmedError, match="two different names"):
        DataConfig(class_names=("a", "a"))


def test_named_classes_need_a_positive_class_unless_one_is_malignant(tmp_path):
    root = tmp_path / "d"
    for s, split in enumerate(("train", "val", "test")):
        for c, cls in enumerate(("cat", "dog")):
            for i in range(3):
                write_png(root / split / cls / f"{i}.png", mark=s * 6 + c * 3 + i)
    with pytest.raises(PrivmedError, match=r"classes \['cat', 'dog'\].*--positive-class"):
        load_dataset(DataConfig(path=str(root), image_size=16))
    ds = load_dataset(DataConfig(path=str(root), image_size=16, positive_class="cat"))
    assert ds.label_names == ("cat",)
    assert ds.table.loc[ds.table["sample_id"].str.contains("cat"), "cat"].eq(1).all()


def test_phantom_names_come_from_the_data_and_benign_can_be_positive(phantom_root):
    default = load_dataset(DataConfig(path=str(phantom_root), image_size=32))
    flipped = load_dataset(DataConfig(path=str(phantom_root), image_size=32, positive_class="benign"))
    assert default.label_names == ("malignant",) and flipped.label_names == ("benign",)
    assert (default.labels + flipped.labels == 1).all()
    assert load_dataset(DataConfig(phantom_samples=100, image_size=32)).label_names == ("malignant",)


@pytest.mark.parametrize("shape,spatial_dims,loads", [((8, 8, 3), 2, True), ((8, 8, 8), 2, False),
                                                       ((8, 8, 8), 3, True)])
def test_npz_colour_is_averaged_but_a_volume_is_never_read_as_colour(tmp_path, shape, spatial_dims, loads):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(n) % 2
    np.savez(tmp_path / "toy.npz", **arrays)
    config = DataConfig(path=str(tmp_path / "toy.npz"), image_size=16, spatial_dims=spatial_dims)
    if loads:
        assert load_dataset(config).images.shape == (16,) + (16,) * spatial_dims
    else:
        with pytest.raises(PrivmedError, match=r"holds images of shape \(8, 8, 8\), not 2D.*--spatial-dims"):
            load_dataset(config)


def write_dicom(path, *, patient: str = "", study: str = "", value: int = 0):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = generate_uid()
    meta.MediaStorageSOPInstanceUID = generate_uid()
    path.parent.mkdir(parents=True, exist_ok=True)
    dcm = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    pixels = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) + value)
    pixels[0, 0] += 5000 + 10 * value  # one bright pixel whose brightness sets the contrast: images differ
    dcm.Rows, dcm.Columns = pixels.shape
    dcm.BitsAllocated, dcm.BitsStored, dcm.HighBit = 16, 16, 15
    dcm.SamplesPerPixel, dcm.PixelRepresentation, dcm.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    if patient:
        dcm.PatientID = patient
    if study:
        dcm.StudyInstanceUID = study
    dcm.PixelData = pixels.tobytes()
    dcm.save_as(path, enforce_file_format=True)


def test_dicom_class_folders_are_split_by_patient_id_from_the_headers(tmp_path):
    root = tmp_path / "dicom"
    for p in range(40):
        cls = "malignant" if p % 2 else "benign"
        for k in range(2):  # two images per patient
            write_dicom(root / cls / f"p{p}_{k}.dcm", patient=f"PAT{p:03d}", value=p * 10 + k)
    write_dicom(root / "benign" / "anon.dcm", study="1.2.3.4", value=5)  # an image of its own
    ds = load_dataset(DataConfig(path=str(root), image_size=16))
    table = ds.table
    assert table["patient_id"].notna().all()
    assert table.loc[table["sample_id"].str.endswith("anon.dcm"), "patient_id"].item() == "study:1.2.3.4"
    assert table.groupby("patient_id")["split"].nunique().max() == 1  # every patient in one split
    assert table[table["patient_id"].str.startswith("PAT")].groupby("patient_id").size().eq(2).all()


def test_dicom_and_nifti_readers(tmp_path):
    import nibabel as nib
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = generate_uid()
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dcm = FileDataset(str(tmp_path / "a.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    pixels = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    dcm.Rows, dcm.Columns = pixels.shape
    dcm.BitsAllocated, dcm.BitsStored, dcm.HighBit = 16, 16, 15
    dcm.SamplesPerPixel, dcm.PixelRepresentation, dcm.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    dcm.PixelData = pixels.tobytes()
    dcm.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    img = read_image(tmp_path / "a.dcm", size=32)
    assert img.shape == (32, 32) and img.min() == pytest.approx(0, abs=0.02) and img.max() == pytest.approx(1, abs=0.02)

    vol = np.random.default_rng(0).random((20, 24, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    out = read_image(tmp_path / "v.nii.gz", size=16, spatial_dims=3)
    assert out.shape == (16, 16, 16)
    with pytest.raises(PrivmedError, match="3 dimensions"):
        read_image(tmp_path / "v.nii.gz", size=16, spatial_dims=2)


# ------------------------------------------------------------------ bad input


def test_missing_path(tmp_path):
    with pytest.raises(PrivmedError, match="does not exist"):
        load_dataset(DataConfig(path=str(tmp_path / "nope")))


def test_empty_class_folder(tmp_path):
    root = class_tree(tmp_path / "d")
    shutil.rmtree(root / "val" / "benign")
    (root / "val" / "benign").mkdir()
    with pytest.raises(PrivmedError, match="contains no images"):
        load_dataset(DataConfig(path=str(root), image_size=16))


def test_corrupt_image(tmp_path):
    root = class_tree(tmp_path / "d")
    (root / "train" / "benign" / "benign_0.png").write_bytes(b"not a png at all")
    with pytest.raises(PrivmedError, match=r"cannot read image .*benign_0.png"):
        load_dataset(DataConfig(path=str(root), image_size=16))


def test_manifest_without_label_column(phantom_root, tmp_path):
    table = pd.read_csv(phantom_root / "metadata.csv").drop(columns=["label"])
    table.to_csv(phantom_root / "no_label.csv", index=False)
    with pytest.raises(PrivmedError, match="has no column 'label'.*--label-column"):
        load_dataset(DataConfig(path=str(phantom_root / "no_label.csv")))


def test_non_binary_label(phantom_root):
    table = pd.read_csv(phantom_root / "metadata.csv")
    table["label"] = np.arange(len(table)) % 3
    table.to_csv(phantom_root / "three.csv", index=False)
    with pytest.raises(PrivmedError, match="binary task needs"):
        load_dataset(DataConfig(path=str(phantom_root / "three.csv")))


def test_split_with_one_class(phantom_root):
    table = pd.read_csv(phantom_root / "metadata.csv")
    table.loc[table["split"] == "val", "label"] = 0
    table.to_csv(phantom_root / "oneclass.csv", index=False)
    with pytest.raises(PrivmedError, match="split 'val' contains only class"):
        load_dataset(DataConfig(path=str(phantom_root / "oneclass.csv")))


def test_patient_in_two_splits(phantom_root):
    table = pd.read_csv(phantom_root / "metadata.csv")
    victim = table.loc[table["split"] == "test", "patient_id"].iloc[0]
    table.loc[table.index[table["split"] == "train"][0], "patient_id"] = victim
    table.to_csv(phantom_root / "overlap.csv", index=False)
    with pytest.raises(PrivmedError, match=f"patients appear in more than one split: {victim}"):
        load_dataset(DataConfig(path=str(phantom_root / "overlap.csv")))


@requires_cbis()
def test_cbis_manifest_is_patient_disjoint_and_binary():
    ds = load_dataset(DataConfig(path=str(CBIS), image_size=32, class_names=("benign", "malignant")))
    assert len(ds) == 1698 and ds.label_names == ("malignant",)
    counts = ds.table.groupby("split")["malignant"].sum().to_dict()
    assert counts == {"train": 525, "val": 102, "test": 157}
    assert {"breast_density", "view", "subtlety", "laterality"} <= set(ds.attribute_columns)


BREASTMNIST = CBIS.parent / "medmnist" / "breastmnist.npz"


@pytest.mark.shared_data
@pytest.mark.skipif(not BREASTMNIST.is_file(), reason=f"BreastMNIST not found at {BREASTMNIST} (set PRIVMED_SHARED_DATA)")
def test_breastmnist_malignant_is_label_0_when_told_and_never_by_default():
    raw = np.load(BREASTMNIST)["train_labels"].ravel()
    default = load_dataset(DataConfig(path=str(BREASTMNIST), image_size=32))
    assert default.label_names == ("label=1",)  # the data does not say what 1 is: no 'malignant' by default
    told = load_dataset(DataConfig(path=str(BREASTMNIST), image_size=32, positive_class="0",
                                   class_names=("malignant", "benign")))
    assert told.label_names == ("malignant",)
    assert int(told.split("train").labels.sum()) == int((raw == 0).sum())  # README: 0 = malignant
