import numpy as np
import pytest

from rtanim.expression import aus


def test_seventeen_ganimation_aus_in_model_order():
    assert aus.AU_CODES == (
        "AU01",
        "AU02",
        "AU04",
        "AU05",
        "AU06",
        "AU07",
        "AU09",
        "AU10",
        "AU12",
        "AU14",
        "AU15",
        "AU17",
        "AU20",
        "AU23",
        "AU25",
        "AU26",
        "AU45",
    )
    assert all(au.name and au.description for au in aus.AUS)


def test_unilateral_extensions_cover_brow_smile_and_blink():
    for code in ("AU02L", "AU02R", "AU12L", "AU12R", "AU45L", "AU45R"):
        assert code in aus.UNILATERAL_CODES
    assert len(aus.EXTENDED_CODES) == 17 + len(aus.SIDED)


@pytest.mark.parametrize(
    ("preset", "facs"),
    [
        ("smile", {"AU06", "AU12"}),
        ("big_smile", {"AU06", "AU12", "AU25", "AU26"}),
        ("surprise", {"AU01", "AU02", "AU05", "AU26"}),
        ("fear", {"AU01", "AU02", "AU04", "AU05", "AU07", "AU20", "AU26"}),
        ("anger", {"AU04", "AU05", "AU07", "AU23"}),
        ("sadness", {"AU01", "AU04", "AU15"}),
        ("disgust", {"AU09", "AU15"}),
        ("contempt", {"AU12R", "AU14R"}),
        ("wink_left", {"AU45L"}),
        ("wink_right", {"AU45R"}),
        ("eyebrows_up", {"AU01", "AU02"}),
        ("eyes_closed", {"AU45"}),
        ("mouth_open", {"AU25", "AU26"}),
    ],
)
def test_presets_hold_their_facs_aus(preset, facs):
    values = aus.PRESETS[preset].aus
    assert facs <= {c for c, v in values.items() if v > 0}


def test_neutral_is_all_zero_and_strength_scales():
    assert not aus.to_vector(aus.preset_aus("neutral")).any()
    half = aus.preset_aus("smile", 0.5)
    assert half["AU12"] == pytest.approx(0.5)


def test_resolve_between_sides_and_bilateral():
    wink = aus.preset_aus("wink_left")
    assert aus.resolve(wink, "AU45") == pytest.approx(0.5)
    assert aus.resolve({"AU12": 0.8}, "AU12L") == pytest.approx(0.8)
    assert aus.resolve({"AU12L": 1.0}, "AU12") == pytest.approx(0.5)
    v = aus.to_vector({"AU12": 2.0, "AU26": -1.0})
    assert v[aus.AU_CODES.index("AU12")] == 1.0 and v[aus.AU_CODES.index("AU26")] == 0.0


def test_blendshape_map_fixed_input():
    bs = {
        "browInnerUp": 0.5,
        "browOuterUpLeft": 0.8,
        "browOuterUpRight": 0.4,
        "mouthSmileLeft": 0.9,
        "mouthSmileRight": 0.7,
        "jawOpen": 0.3,
        "mouthLowerDownLeft": 0.6,
        "mouthLowerDownRight": 0.2,
        "mouthClose": 0.1,
        "eyeBlinkLeft": 1.0,
        "eyeBlinkRight": 0.0,
        "mouthShrugLower": 0.25,
    }
    gains = {c: 1.0 for c in aus.AU_CODES}
    out = aus.blendshapes_to_aus(bs, gains)
    assert out["AU01"] == pytest.approx(0.5)
    assert (out["AU02L"], out["AU02R"], out["AU02"]) == pytest.approx((0.8, 0.4, 0.6))
    assert out["AU12"] == pytest.approx(0.8)
    assert out["AU26"] == pytest.approx(0.3)
    assert out["AU25"] == pytest.approx(((0.6 - 0.1) + (0.3 - 0.1)) / 2)
    assert (out["AU45L"], out["AU45R"]) == (1.0, 0.0)
    assert out["AU17"] == pytest.approx(0.25)
    assert out["AU04"] == 0.0
    vec = aus.to_vector(out)
    assert vec.shape == (17,) and vec.dtype == np.float32
    doubled = aus.blendshapes_to_aus(bs, {**gains, "AU26": 2.0})
    assert doubled["AU26"] == pytest.approx(0.6)
    assert aus.blendshapes_to_aus({"jawOpen": 0.9}, {**gains, "AU26": 2.0})["AU26"] == 1.0


@pytest.mark.parametrize(
    "typed, meant",
    [
        ("AU13", "AU12"),  # nearest number; AU12 and AU14 tie, the lower wins (spelling alone says AU23)
        ("au12", "AU12"),  # same AU, other spelling
        ("AU6", "AU06"),
        ("AU12l", "AU12L"),
        ("AU13R", "AU12R"),
        ("AU01L", "AU02L"),  # AU01 has no sides: the nearest AU that has
        ("AU43", "AU45"),
        ("AU99", None),  # nothing near
        ("smiel", None),
    ],
)
def test_suggest_code_prefers_the_nearest_au_number(typed, meant):
    assert aus.suggest_code(typed) == meant


def test_unknown_code_reason_names_the_guess_or_the_list():
    assert aus.unknown_code("AU13") == "unknown AU 'AU13'; did you mean AU12?"
    assert aus.unknown_code("AU99").endswith("run `rtanim aus` for the list")
    from rtanim.errors import InputError

    with pytest.raises(InputError, match="did you mean AU12"):
        aus.parse_codes("AU01,AU13", "--grid")
