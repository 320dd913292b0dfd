import pytest

from rtanim.files import staged, write_text


def test_staged_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "report.json"
    write_text(out, "{}\n")
    assert out.read_text() == "{}\n"
    with pytest.raises(RuntimeError), staged(out) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert out.read_text() == "{}\n"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
