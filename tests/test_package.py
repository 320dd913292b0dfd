import hashlib
from importlib import resources

LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"


def test_landmarker_ships_inside_the_package_with_its_licence():
    assets = resources.files("rtanim") / "assets"
    data = (assets / "face_landmarker.task").read_bytes()
    assert hashlib.sha256(data).hexdigest() == LANDMARKER_SHA256
    notice = (assets / "NOTICE.md").read_text()
    assert "Apache-2.0" in notice and "face_landmarker.task" in notice
    assert "Apache License" in (assets / "LICENSE-Apache-2.0.txt").read_text()
