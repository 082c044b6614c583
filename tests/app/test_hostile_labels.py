"""Hostile class-folder data sets: what each folder is read as, said in the open or refused.

Listing cases use a stand-in for the classifier (its name and class names are all the listing
reads); whole runs use a tiny Hugging Face ViT (32 x 32 images) whose ``id2label`` are the
labels. Each case ends in a refusal that names the folder and the way out, or in a line of
``classes.csv`` / ``report.md``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("timm")
pytest.importorskip("torchvision")
pytest.importorskip("matplotlib")
pytest.importorskip("skimage")
pytest.importorskip("quantus")
from hugging_face_folders import vit_folder  # noqa: E402
from PIL import Image  # noqa: E402

from camplus_app import cli, zoo  # noqa: E402
from camplus_app.commands.compare.data import class_mapping, classes_csv  # noqa: E402
from camplus_app.commands.compare.settings import setting_changes  # noqa: E402
from camplus_app.datasets import Listing, find_images  # noqa: E402
from camplus_app.duplicates import average_hash  # noqa: E402
from camplus_app.labels import ModelClasses, placeholder_labels  # noqa: E402
from camplus_app.report import _classes_section  # noqa: E402


class _Model:
    """What the listing reads of a classifier: its name and class names."""

    def __init__(self, categories: list[str], name: str = "toy") -> None:
        self.categories = categories
        self.name = name


IMAGENET = _Model(zoo.imagenet_categories(), "imagenet-model")
TOY = _Model(["cat", "dog", "cup"])
UNNAMED = _Model(placeholder_labels(10), "ten-class-head")
_SEEDS = iter(range(10**6))


def _png(path: Path | bytes, seed: int | None = None, size: int = 8) -> Path | bytes:
    """A random picture (its own unless ``seed`` is given) saved as PNG at ``path``."""
    seed = next(_SEEDS) if seed is None else seed
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    with open(path, "wb") as file:
        Image.fromarray(pixels).save(file, format="PNG")
    return path


def _data(root: Path, *folders: str, images: int = 1) -> Path:
    for folder in folders:
        for i in range(images):
            _png(root / folder / f"{i}.png")
    return root


def _refusal(root: Path, model: _Model = TOY, **options: bool) -> str:
    with pytest.raises(ValueError) as error:
        find_images([str(root)], model, **options)
    return str(error.value)


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# --------------------------------------------------------------- issue 26: no guess in a name


def test_a_name_that_several_classes_share_is_refused_with_their_synset_ids(tmp_path):
    root = _data(tmp_path, "Cardigan", "tench")
    message = _refusal(root, IMAGENET)
    assert "'Cardigan' names 2 classes of imagenet-model" in message
    assert "264 'Cardigan' (n02113186), 474 'cardigan' (n02963159)" in message
    assert "rename the folder to the synset id" in message and "--skip-unmatched" in message
    listing = find_images([str(root)], IMAGENET, skip_unmatched=True)
    assert list(listing.classes) == ["tench"] and "names 2 classes" in listing.unmatched["Cardigan"]
    row = next(r for r in _rows(classes_csv(listing)) if r["folder"] == "Cardigan")
    assert row["class index"] == "" and "names 2 classes" in row["note"]


@pytest.mark.parametrize(
    "folders",
    [("tench", "Tench"), ("great_white_shark", "great white shark"), ("n01440764", "0", "tench")],
)
def test_folders_that_name_one_class_are_refused_naming_all_or_merged(tmp_path, folders):
    root = _data(tmp_path, *folders, images=2)
    (root / "TENCH").mkdir()  # empty: not merged, whatever it names
    (root / "goldfish").mkdir()
    message = _refusal(root, IMAGENET)
    assert all(name in message for name in folders) and "--merge-classes" in message
    listing = find_images([str(root)], IMAGENET, merge_classes=True)
    assert len(set(listing.classes.values())) == 1 and len(listing.entries) == 2 * len(folders)
    assert list(listing.merged.values()) == [sorted(folders)]
    notes = {r["folder"]: r["note"] for r in _rows(classes_csv(listing))}
    assert all(notes[name].startswith("merged with") for name in folders)
    assert (notes["TENCH"], notes["goldfish"]) == ("empty", "empty")
    assert "## Class folders merged (--merge-classes)" in "\n".join(_classes_section(listing))


@pytest.mark.parametrize(
    ("folder", "rename"),
    [("007", "'7'"), ("+3", "'3'"), ("-0", "'0'"), ("1_0", "'10'"), ("1e1", "'10'"),
     ("0x3", "'3'"), ("3.0", "'3'"), ("2.5", "0 to 999")],
)  # fmt: skip
def test_an_index_spelled_other_than_plain_ascii_decimal_is_refused(tmp_path, folder, rename):
    message = _refusal(_data(tmp_path, folder, "tench"), IMAGENET)
    assert f"'{folder}' is not a class index as written" in message and rename in message


@pytest.mark.parametrize(
    ("folder", "digit"),
    [("３", "FULLWIDTH DIGIT THREE"), ("٣", "ARABIC-INDIC DIGIT THREE"),
     ("३", "DEVANAGARI DIGIT THREE"), ("n٠١٤٤٠٧٦٤", "ARABIC-INDIC DIGIT ZERO")],
)  # fmt: skip
def test_digits_of_other_scripts_are_refused_with_the_ascii_spelling(tmp_path, folder, digit):
    message = _refusal(_data(tmp_path, folder, "tench"), IMAGENET)
    ascii_name = "".join(str(unicodedata.decimal(c, c)) for c in folder)
    assert digit in message and f"rename the folder to {ascii_name!r}" in message


# ------------------------------------------------------ issue 26: a model with its own classes


def test_a_head_without_class_names_maps_folders_by_index_only(tmp_path):
    assert zoo._categories(10) == placeholder_labels(10)  # what the zoo names such a head
    listing = find_images([str(_data(tmp_path / "ok", "0", "9"))], UNNAMED)
    assert listing.classes == {"0": 0, "9": 9} and listing.source.startswith("class indices")
    for folder, reason in [
        ("tench", "names no classes"),
        ("class_3", "names no classes"),
        ("n01440764", "not ImageNet-1k's"),
        ("10", "out of range"),
    ]:
        message = _refusal(_data(tmp_path / folder, folder), UNNAMED)
        assert reason in message and "class index" in message
        assert "the classes of ten-class-head: 0 'class 0'" in message  # the label list


def test_a_data_set_that_fits_no_label_of_the_model_is_refused_with_them(tmp_path):
    message = _refusal(_data(tmp_path, "tabby", "beagle"), TOY)
    assert "2 of 2 class folders" in message
    assert "the classes of toy: 0 'cat', 1 'dog', 2 'cup'" in message
    many = _refusal(_data(tmp_path / "many", *[f"x{i}" for i in range(8)]), IMAGENET)
    assert "and 3 more" in many and "... (1000 in all)" in many and "0 'tench' (n01440764)" in many


def test_a_label_that_is_also_an_index_or_shared_by_two_outputs_is_refused(tmp_path):
    numbers = _Model(["7", "2", "cat"], "numbered")
    assert "is class index 2 ('cat') and the name of class 1 '2'" in _refusal(
        _data(tmp_path / "a", "2"), numbers
    )
    assert find_images([str(_data(tmp_path / "b", "0"))], numbers).classes == {"0": 0}
    twice = _Model(["cat", "dog", "cat"], "twice")
    message = _refusal(_data(tmp_path / "c", "cat"), twice)
    assert "'cat' names 2 classes of twice: 0 'cat', 2 'cat'" in message
    assert "rename the folder to the class index" in message


# -------------------------------------------------------------------------- Unicode in names


@pytest.mark.parametrize(
    ("folder", "said"),
    [("ｃａｔ", "read as 'cat' under NFKC"), ("ﬁsh", "read as 'fish' under NFKC"),
     ("cat²", "read as 'cat2' under NFKC"), ("\u202etac", "U+202E RIGHT-TO-LEFT OVERRIDE"),
     ("\u200fcat", "U+200F RIGHT-TO-LEFT MARK"), ("ca\u200bt", "U+200B ZERO WIDTH SPACE"),
     ("ca\nt", "a control character, U+000A"), ("ca\tt", "a control character, U+0009"),
     (" cat", "begins or ends with a space"), ("cat ", "rename the folder to 'cat'")],
)  # fmt: skip
def test_names_that_show_other_than_they_are_are_refused(tmp_path, folder, said):
    message = _refusal(_data(tmp_path, folder, "dog"), TOY)
    assert said in message and "rename the folder" in message
    assert "\u202e" not in message and "\u200f" not in message  # shown escaped, not obeyed
    listing = find_images([str(tmp_path)], TOY, skip_unmatched=True)  # listed, escaped
    lines = _classes_section(listing)
    assert list(listing.classes) == ["dog"] and sum(line.startswith("| ") for line in lines) == 3
    assert not any(c in line for line in lines for c in "\n\t\u202e\u200f\u200b")


def test_a_folder_name_that_is_not_utf8_is_refused(tmp_path):
    _png(os.fsencode(tmp_path) + b"/ca\xfft/0.png")
    _data(tmp_path, "dog")
    message = _refusal(tmp_path, TOY)
    assert "'ca\\udcfft': the folder name is not valid UTF-8" in message


def test_a_decomposed_name_matches_its_composed_label_and_says_so(tmp_path):
    model = _Model(["café", "חתול", "dog"], "unicode")
    decomposed = unicodedata.normalize("NFD", "café")
    listing = find_images([str(_data(tmp_path, decomposed, "חתול", "DOG"))], model)
    matched = {row.folder: (row.class_index, row.matched) for row in listing.folders}
    assert matched[decomposed] == (0, "normalised name")
    assert matched["חתול"] == (1, "exact name")  # a right-to-left label, read as written
    assert matched["DOG"] == (2, "normalised name")
    assert "| חתול | 1 | חתול | exact name | 1 |  |" in _classes_section(listing)


def test_an_unknown_right_to_left_name_is_refused_with_the_labels(tmp_path):
    message = _refusal(_data(tmp_path, "כלב", "cat"), TOY)
    assert "unknown class 'כלב' for toy" in message and "--skip-unmatched" in message


def test_names_equal_in_nfc_are_refused_even_when_they_match_nothing(tmp_path):
    composed = "café"
    _data(tmp_path, composed, unicodedata.normalize("NFD", composed), "cat")
    message = _refusal(tmp_path, TOY, skip_unmatched=True)
    assert "differ only in their Unicode encoding" in message and "'caf\\xe9'" in message


# ------------------------------------------------------------------------ many or few classes


def test_a_thousand_class_folders_by_index_are_all_listed(tmp_path):
    root = _data(tmp_path, *map(str, range(1000)))
    listing = find_images([str(root)], IMAGENET)
    rows = _rows(classes_csv(listing))
    assert len(rows) == 1000 and {r["matched by"] for r in rows} == {"index"}
    assert sorted(int(r["class index"]) for r in rows) == list(range(1000))
    assert sum(line.startswith("| ") for line in _classes_section(listing)) == 1001  # + header


def test_empty_folders_are_listed_and_never_refused_for_their_name(tmp_path):
    _data(tmp_path, "cat")
    (tmp_path / "nothing-here").mkdir()
    (tmp_path / "only-notes").mkdir()
    (tmp_path / "only-notes" / "notes.txt").write_text("x")
    listing = find_images([str(tmp_path)], TOY)
    assert listing.empty == ["nothing-here", "only-notes"] and not listing.unmatched
    assert listing.skipped == {"only-notes/notes.txt": listing.skipped["only-notes/notes.txt"]}
    row = next(r for r in _rows(classes_csv(listing)) if r["folder"] == "nothing-here")
    assert (row["images"], row["note"]) == ("0", "empty")
    assert "## Empty class folders (2, no image file)" in _classes_section(listing)


def test_a_data_set_of_empty_folders_is_refused_naming_them(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "zero.png").write_bytes(b"")
    message = _refusal(tmp_path, TOY)
    assert "hold no images" in message and "(empty: cat, dog)" in message


# ------------------------------------------------------------------- links, hidden, strays


def test_class_folder_links_inside_the_data_set_are_not_read_twice(tmp_path):
    _data(tmp_path, "cat")
    outside = _data(tmp_path.parent / f"{tmp_path.name}-elsewhere", "dogs")
    os.symlink(tmp_path / "cat", tmp_path / "dog")  # another class folder: its images twice
    os.symlink(tmp_path, tmp_path / "cup")  # the data set itself
    os.symlink(outside / "dogs", tmp_path / "1")  # a folder outside: read
    listing = find_images([str(tmp_path)], TOY)
    assert listing.classes == {"1": 1, "cat": 0}
    assert (
        listing.skipped["dog"]
        == "a symbolic link to cat (not read: its images would be read twice)"
    )
    assert listing.skipped["cup"].startswith("a symbolic link to the data set itself")


def test_hidden_files_and_folders_are_listed_not_read(tmp_path):
    _data(tmp_path, "cat", ".ipynb_checkpoints")
    (tmp_path / "cat" / ".DS_Store").write_text("x")
    _png(tmp_path / "cat" / "._0.png")  # an AppleDouble file
    _png(tmp_path / "cat" / ".thumbs" / "small.png")
    listing = find_images([str(tmp_path)], TOY)
    assert [e.name for e in listing.entries] == ["cat/0"]
    assert listing.hidden == [".ipynb_checkpoints", "cat/.DS_Store", "cat/._0.png", "cat/.thumbs"]
    assert "## Hidden files and folders (4, not read)" in _classes_section(listing)


def test_a_stray_file_and_an_empty_file_are_listed_with_why(tmp_path):
    _data(tmp_path, "cat")
    (tmp_path / "README.txt").write_text("x")
    (tmp_path / "cat" / "zero.png").write_bytes(b"")
    listing = find_images([str(tmp_path)], TOY)
    assert listing.skipped == {
        "README.txt": "a file beside the class folders (not read)",
        "cat/zero.png": "an empty file (0 bytes)",
    }


# --------------------------------------------------------------------------------- duplicates


def test_identical_bytes_are_scored_once_from_the_first_path_in_sorted_order(tmp_path):
    first = _png(tmp_path / "cat" / "b.png")
    (tmp_path / "cat" / "a").mkdir()
    (tmp_path / "cat" / "c.png").write_bytes(first.read_bytes())
    (tmp_path / "cat" / "a" / "z.png").write_bytes(first.read_bytes())
    os.symlink(first, tmp_path / "cat" / "d.png")  # a link to a file: the same bytes
    _data(tmp_path, "dog")
    listing = find_images([str(tmp_path)], TOY)
    assert [e.name for e in listing.entries] == ["cat/a/z", "dog/0"]
    assert listing.duplicates == {"cat/a/z.png": ["cat/b.png", "cat/c.png", "cat/d.png"]}
    kept = find_images([str(tmp_path)], TOY, keep_duplicates=True)
    assert len(kept.entries) == 5 and kept.duplicates == listing.duplicates
    assert "scored too (--keep-duplicates)" in "\n".join(_classes_section(kept))


def test_one_picture_in_two_classes_is_refused_unless_kept(tmp_path):
    picture = _png(tmp_path / "cat" / "a.png")
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "a.png").write_bytes(picture.read_bytes())
    message = _refusal(tmp_path, TOY)
    assert "cat/a.png (class 0) and dog/a.png (class 1)" in message
    assert "--keep-duplicates" in message
    listing = find_images([str(tmp_path)], TOY, keep_duplicates=True)
    assert [e.label for e in listing.entries] == [0, 1]


def test_the_same_picture_at_another_size_and_encoding_is_a_near_duplicate(tmp_path):
    blocks = np.kron(np.random.default_rng(3).integers(0, 2, (8, 8)), np.ones((8, 8))) * 200
    picture = Image.fromarray(np.stack([blocks] * 3, axis=-1).astype(np.uint8) + 20)
    (tmp_path / "cat").mkdir()
    picture.save(tmp_path / "cat" / "big.png")
    picture.resize((32, 32), Image.Resampling.BILINEAR).save(
        tmp_path / "cat" / "small.jpg", quality=80
    )
    Image.new("RGB", (16, 16), (9, 9, 9)).save(tmp_path / "cat" / "flat1.png")
    Image.new("RGB", (24, 24), (99, 9, 9)).save(tmp_path / "cat" / "flat2.bmp")
    listing = find_images([str(tmp_path)], TOY)
    assert listing.near_duplicates == [["cat/big.png", "cat/small.jpg"]]  # flat: no hash
    assert len(listing.entries) == 4 and average_hash(tmp_path / "cat" / "flat1.png") is None
    assert "- `cat/big.png`, `cat/small.jpg`" in _classes_section(listing)


# ---------------------------------------------------------------------- what the report shows


def test_names_that_would_break_the_report_or_a_spreadsheet_are_escaped(tmp_path):
    model = _Model(["a|b", "=1+1", "x`y"], "odd")
    listing = find_images([str(_data(tmp_path, "a|b", "=1+1", "x`y"))], model)
    lines = _classes_section(listing)
    assert "| a\\|b | 0 | a\\|b | exact name | 1 |  |" in lines
    assert "| x'y | 2 | x'y | exact name | 1 |  |" in lines
    assert "'=1+1" in classes_csv(listing)  # not a formula in a spreadsheet
    assert class_mapping(listing) == {"=1+1": 1, "a|b": 0, "x`y": 2}


def test_a_run_recorded_before_the_new_options_resumes_with_their_defaults():
    old = {"batch_size": 2, "skip_unmatched": False}
    assert setting_changes(old, {**old, "merge_classes": False, "keep_duplicates": False}) == []
    assert setting_changes(old, {**old, "merge_classes": True}) == ["merge_classes"]


def test_model_classes_say_what_they_map_through():
    assert ModelClasses(IMAGENET.categories, "m").source.startswith("ImageNet-1k classes")
    assert ModelClasses(TOY.categories, "m").source.startswith("the model's own labels (3")
    assert ModelClasses(UNNAMED.categories, "m").source == (
        "class indices 0 to 9 (the model names no classes)"
    )


# ------------------------------------------------------------------------------- whole runs


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return vit_folder(tmp_path_factory.mktemp("hf") / "vit", ["cat", "dog", "cup"])


def _compare(data: Path, out: Path, model: Path, *extra: str) -> int:
    argv = ["compare", str(data), "-o", str(out), "-q", "--model", str(model), "--workers", "0"]
    return cli.main([*argv, "--methods", "gradcam,hirescam", *extra])


def _csv(path: Path) -> list[dict[str, str]]:
    return _rows(path.read_text())


def test_a_run_lists_every_folder_as_it_was_read(tmp_path, model, capsys):
    root = _data(tmp_path / "data", "cat", "Dog", "2", "tabby", images=2)
    (root / "empty").mkdir()
    (root / "cat" / ".DS_Store").write_text("x")
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG not a PNG")
    (root / "cat" / "again.png").write_bytes((root / "cat" / "0.png").read_bytes())
    out = tmp_path / "out"
    assert _compare(root, out, model) == 2
    assert "tabby: unknown class 'tabby'" in capsys.readouterr().err
    assert _compare(root, out, model, "--skip-unmatched") == 0
    rows = {r["folder"]: r for r in _csv(out / "classes.csv")}
    assert {k: (r["class index"], r["matched by"], r["images"]) for k, r in rows.items()} == {
        "2": ("2", "index", "2"),
        "Dog": ("1", "normalised name", "2"),
        "cat": ("0", "exact name", "4"),
        "empty": ("", "", "0"),
        "tabby": ("", "", "2"),
    }
    listed = _csv(out / "dataset.csv")
    assert [r["path"] for r in listed] == ["2/0.png", "2/1.png", "Dog/0.png", "Dog/1.png",
                                           "cat/0.png", "cat/1.png", "cat/broken.png"]  # fmt: skip
    report = (out / "report.md").read_text()
    for line in [
        "| class folders read as | the model's own labels (3 classes): class names and class "
        "indices |",
        "| duplicates | 1 file with the bytes of another, not scored (listed below) |",
        "| Dog | 1 | dog | normalised name | 2 |  |",
        "- `cat/0.png`: `cat/again.png`",
        "- `empty`",
        "- `cat/.DS_Store`",
        "- `tabby`: unknown class 'tabby' for vit",
        "## Unreadable images (1, all in unreadable.csv)",
    ]:
        assert line in report, line
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == {"2": 2, "Dog": 1, "cat": 0, "empty": None, "tabby": None}


def _cut_to_first_batch(out: Path) -> None:
    """As if the run had been killed after its first batch."""
    part = next((out / "parts").glob("*.jsonl"))
    part.write_text(part.read_text().splitlines()[0] + "\n")


@pytest.mark.parametrize("keep", [False, True])
def test_resume_with_or_without_duplicates_equals_an_uninterrupted_run(tmp_path, model, keep):
    root = _data(tmp_path / "data", "cat", "dog", images=2)
    (root / "dog" / "copy.png").write_bytes((root / "cat" / "1.png").read_bytes())
    (root / "cat" / "copy.png").write_bytes((root / "cat" / "1.png").read_bytes())
    extra = ["--batch-size", "2", "--keep-duplicates"] if keep else ["--batch-size", "2"]
    if not keep:  # one picture in two classes: refused
        assert _compare(root, tmp_path / "refused", model, *extra) == 2
        (root / "dog" / "copy.png").unlink()
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _compare(root, whole, model, *extra) == 0
    assert _compare(root, cut, model, *extra) == 0
    _cut_to_first_batch(cut)
    assert _compare(root, cut, model, "--resume") == 0
    images = len(_csv(whole / "dataset.csv"))
    assert images == (6 if keep else 4)
    for name in ("scores.csv", "images.csv", "dataset.csv", "classes.csv"):
        assert (cut / name).read_text() == (whole / name).read_text(), name


def test_resume_refuses_a_run_whose_folders_would_now_be_other_classes(tmp_path, model, capsys):
    labels = vit_folder(tmp_path / "relabelled", ["cat", "dog", "cup"])
    root = _data(tmp_path / "data", "cat", "dog")
    out = tmp_path / "out"
    assert _compare(root, out, labels, "--batch-size", "1") == 0
    _cut_to_first_batch(out)
    config = labels / "config.json"
    settings = json.loads(config.read_text())  # the model's labels edited: cat and dog swap
    settings["id2label"] = {"0": "dog", "1": "cat", "2": "cup"}
    settings["label2id"] = {"dog": 0, "cat": 1, "cup": 2}
    config.write_text(json.dumps(settings))
    capsys.readouterr()
    assert _compare(root, out, labels, "--resume") == 2
    err = capsys.readouterr().err
    assert "class folders would now be read as other classes" in err
    assert "cat: class 0 then, class 1 now; dog: class 1 then, class 0 now" in err
    assert "--overwrite" in err


def test_a_listing_reads_no_class_folder_from_a_flat_folder(tmp_path):
    listing = find_images([str(_png(tmp_path / "a.png"))], TOY)
    assert isinstance(listing, Listing) and not listing.labelled and listing.folders == []


def test_resume_names_a_folder_read_otherwise_and_leaves_new_or_gone_ones_to_the_data(tmp_path):
    from camplus_app.commands.compare.data import check_same_classes
    from camplus_app.runs import RunFolderError

    root = _data(tmp_path, "cat", "dog", "cup")
    then = {"classes": class_mapping(find_images([str(root)], TOY))}
    check_same_classes({}, find_images([str(root)], TOY), tmp_path)  # recorded before: goes on
    for image in (root / "dog").iterdir():
        image.unlink()  # dog emptied: read as no class now
    with pytest.raises(RunFolderError, match="dog: class 1 then, not scored now"):
        check_same_classes(then, find_images([str(root)], TOY), tmp_path)
    (root / "dog").rmdir()  # gone: its images are missing, which the data check names
    check_same_classes(then, find_images([str(root)], TOY), tmp_path)
