"""vendor/pins.toml validation: strict, and the message names the file, the key and the fix."""

from pathlib import Path

import pytest

from headroom.sources import pins
from headroom.ground.errors import PinsError, UsageError

GOOD = """
[toy]
distribution = "toypkg"
version = "1.0.0"
sdist = "toypkg-1.0.0.tar.gz"
sdist_sha256 = "{h}"
wheel = "toypkg-1.0.0-py3-none-any.whl"
wheel_sha256 = "{h}"
repository = "https://example.invalid/toypkg"
tag = "v1.0.0"
""".format(h="a" * 64)


def test_good_pins_parse():
    (pin,) = pins.parse(GOOD, Path("vendor/pins.toml"))
    assert pin.name == "toy" and pin.requirement == "toypkg==1.0.0"


def test_render_round_trips():
    parsed = pins.parse(GOOD, Path("p"))
    assert pins.parse(pins.render(parsed), Path("p")) == parsed


def test_typo_names_file_key_and_suggestion():
    with pytest.raises(PinsError) as exc:
        pins.parse(GOOD.replace("sdist_sha256", "sdist_sha265"), Path("vendor/pins.toml"))
    text = str(exc.value)
    assert "vendor/pins.toml" in text and "'sdist_sha265'" in text and "Did you mean 'sdist_sha256'?" in text


def test_missing_field_is_named():
    with pytest.raises(PinsError, match=r"\[toy\]: missing key\(s\) tag"):
        pins.parse(GOOD.replace('tag = "v1.0.0"', ""), Path("vendor/pins.toml"))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("a" * 64, "A" * 64, "64 lowercase hex"),
        ('sdist = "toypkg-1.0.0.tar.gz"', 'sdist = "../toypkg-1.0.0.tar.gz"', "plain file name"),
        ('version = "1.0.0"', 'version = "2.0.0"', "must contain the version"),
    ],
)
def test_bad_values(old, new, message):
    with pytest.raises(PinsError, match=message):
        pins.parse(GOOD.replace(old, new, 1), Path("p"))


def test_bad_toml_and_empty():
    with pytest.raises(PinsError, match="not valid TOML"):
        pins.parse("[toy\n", Path("p"))
    with pytest.raises(PinsError, match="no upstream is pinned"):
        pins.parse("", Path("p"))


def test_select_unknown_upstream_suggests():
    parsed = pins.parse(GOOD, Path("p"))
    with pytest.raises(UsageError, match="Did you mean 'toy'"):
        pins.select(parsed, ["toyy"])


def test_repository_pins_are_valid():
    root = Path(__file__).resolve().parents[1]
    names = [p.name for p in pins.load(root)]
    # dependencies first: peft needs accelerate and transformers, transformers uses accelerate for FSDP
    assert names == ["accelerate", "transformers", "peft"]
    for name in names:
        assert (root / "patches" / name / "series").is_file()


def test_write_keeps_comments_and_other_pins(tmp_path):
    """A rebase records its new pin in place: the other pins, comments and layout stay as they are."""
    a = pins.Pin("a", "a", "1.0", "a-1.0.tar.gz", "1" * 64, "a-1.0-py3-none-any.whl", "2" * 64, "https://x/a", "v1.0")
    b = pins.Pin("b", "b", "2.0", "b-2.0.tar.gz", "3" * 64, "b-2.0-py3-none-any.whl", "4" * 64, "https://x/b", "v2.0")
    (tmp_path / "vendor").mkdir()
    text = "# header comment\n\n" + pins.render([a, b])
    (tmp_path / "vendor" / "pins.toml").write_text(text)
    new = pins.Pin("a", "a", "1.1", "a-1.1.tar.gz", "5" * 64, "a-1.1-py3-none-any.whl", "6" * 64, "https://x/a", "v1.1")
    pins.write(tmp_path, new)
    out = (tmp_path / "vendor" / "pins.toml").read_text()
    assert out.startswith("# header comment\n")
    assert pins.load(tmp_path) == [new, b]
