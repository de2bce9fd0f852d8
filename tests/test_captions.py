"""Captions from attributes measured on Fashion-MNIST images (issue 13): the attribute functions on
images whose answer is known, the thresholds and balance on the real training set, templates and
synonyms, held-out combinations, the parse round trip and bad input."""
import numpy as np
import pytest

from minidiff.data import captions as C


@pytest.fixture(scope="module")
def train():
    """The whole training set with its attributes, and the captions of its first 3,000 images."""
    from minidiff.data.images import load_images

    x, y = load_images("fashion-mnist", "train")
    _, _, text = C.caption_dataset("train", limit=3000)
    return x, y, text, C.attributes(x, y)


def canvas(n=1):
    return np.zeros((n, 1, 28, 28), dtype=np.uint8)


# --- the attribute functions on images whose answer is known

def test_brightness_of_a_bright_and_a_dim_square():
    x = canvas(2)
    x[0, 0, 6:22, 6:22] = 250
    x[1, 0, 6:22, 6:22] = 60
    for label in range(10):
        assert list(C.brightness(x, [label, label])) == ["light", "dark"]


def test_size_of_a_large_and_a_small_blob():
    x = canvas(2)
    x[0, 0, 2:26, 2:26] = 200
    x[1, 0, 11:17, 11:17] = 200
    assert list(C.size(x, [3, 3])) == ["large", "small"]


def shoe(toe="left"):
    """A sole along the bottom and a shaft standing over the heel end: the toe is the far end."""
    x = canvas()
    x[0, 0, 20:24, 3:25] = 200      # sole
    x[0, 0, 6:20, 17:25] = 200      # shaft over the heel (right), so the toe points left
    return x if toe == "left" else x[..., ::-1].copy()


@pytest.mark.parametrize("label", C.FOOTWEAR)
def test_facing_follows_the_toe_and_applies_to_footwear_only(label):
    assert list(C.facing(np.concatenate([shoe("left"), shoe("right")]), [label, label])) == ["left", "right"]
    assert list(C.facing(shoe("left"), [0])) == [""]


def test_facing_left_is_the_way_the_real_footwear_points(train):
    """Fashion-MNIST's footwear points its toe left (checked by eye on image grids): the heel end,
    with the shaft, holds more mass, on the right."""
    x, y, _, attrs = train
    right_mass = x[:, 0, :, 14:].sum((1, 2), dtype=np.int64) > x[:, 0, :, :14].sum((1, 2), dtype=np.int64)
    for label in C.FOOTWEAR:
        k = y == label
        assert np.mean(attrs["facing"][k] == "left") > 0.9
        assert np.mean((attrs["facing"][k] == "left") == right_mass[k]) > 0.9
    assert set(attrs["facing"][~np.isin(y, C.FOOTWEAR)]) == {""}


def test_pattern_of_a_checkerboard_and_a_flat_patch():
    x = canvas(2)
    i, j = np.indices((20, 20))
    x[0, 0, 4:24, 4:24] = np.where((i + j) % 2, 100, 250)
    x[1, 0, 4:24, 4:24] = 175
    assert list(C.pattern(x, [6, 6])) == ["patterned", "plain"]


def test_a_blank_image_has_no_attribute():
    attrs = C.attributes(canvas(), [9])
    assert {name: list(v) for name, v in attrs.items()} == {name: [""] for name in C.ATTRIBUTES}


# --- the real data

def test_thresholds_are_the_training_set_medians(train):
    x, y, _, _ = train
    fitted = C.fit_thresholds(x, y)
    assert sorted(fitted) == sorted(C.THRESHOLDS)
    for name, table in C.THRESHOLDS.items():
        np.testing.assert_allclose(fitted[name], table, rtol=1e-12, err_msg=name)


def test_bands_are_the_training_set_quantiles(train):
    x, y, _, _ = train
    lo, hi = C.fit_thresholds(x, y, q=C.BAND[0]), C.fit_thresholds(x, y, q=C.BAND[1])
    for name, (table_lo, table_hi) in C.BANDS.items():
        np.testing.assert_allclose(lo[name], table_lo, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(hi[name], table_hi, rtol=1e-12, err_msg=name)
        assert np.all(np.asarray(table_lo) < C.THRESHOLDS[name]) and np.all(C.THRESHOLDS[name] < np.asarray(table_hi))


def test_a_caption_says_a_word_only_outside_its_class_band(train):
    x, y, text, attrs = train
    said = C.caption_attributes(x[:3000], y[:3000])
    xc = x[:3000, 0].astype(np.float32)
    for name in C.BANDS:
        v = C.measure(name, xc)
        lo, hi = (np.asarray(t)[y[:3000]] for t in C.BANDS[name])
        inside = (v >= lo) & (v <= hi)
        assert 0.12 < inside.mean() < 0.28, name                    # about the middle fifth of each class
        assert set(said[name][inside]) == {""}, name
        np.testing.assert_array_equal(said[name][~inside], attrs[name][:3000][~inside])
        # the captions: never a word of this attribute inside the band; outside, about MENTION_P of them
        named = np.array([name in C.parse_caption(t)[1] for t in text])
        assert not named[inside].any(), name
        assert abs(named[~inside & (attrs[name][:3000] != "")].mean() - C.MENTION_P) < 0.05, name
    np.testing.assert_array_equal(said["facing"], attrs["facing"][:3000])      # a fact: always sayable


def test_each_attribute_splits_each_class_about_in_half(train):
    _, y, _, attrs = train
    for name, values in (("brightness", "light"), ("size", "large"), ("pattern", "patterned")):
        share = np.array([np.mean(attrs[name][y == k] == values) for k in range(10)])
        assert np.all((share > 0.35) & (share < 0.65)), (name, share.round(3))


def test_captions_name_the_class_and_only_measured_attributes(train):
    _, y, text, attrs = train
    for i in range(len(text)):
        label, said = C.parse_caption(text[i])
        assert label == y[i], text[i]
        for name, value in said.items():
            assert attrs[name][i] == value, (text[i], name)
        assert text[i] == text[i].lower()


def test_held_out_combinations_never_appear_in_training_captions(train):
    x, y, text, attrs = train
    held = C.is_held_out(y, attrs)
    expected = np.zeros(len(y), bool)
    for name, value, label in C.HELD_OUT:
        expected |= (y == label) & (attrs[name] == value)
        assert np.sum((y == label) & (attrs[name] == value)) > 1000     # enough images to test on
    np.testing.assert_array_equal(held, expected)
    # A caption says only its image's measured attributes (the test above), so only these images
    # could pair the words: caption each as caption_dataset("train") does, image i with seed (0, i).
    assert C.captions(x[:3000], y[:3000], hold_out=True) == text
    for i in np.flatnonzero(held):
        words = {name: attrs[name][i] for name in C.ATTRIBUTES}
        t = C.caption(int(y[i]), words, np.random.default_rng((0, i)), hold_out=True)
        label, said = C.parse_caption(t)
        assert all(said.get(name) != value for name, value, k in C.HELD_OUT if k == label), t
    # the images stay, and away from the training split the same combinations are said
    test_x, test_y, test_text = C.caption_dataset("test", limit=2000)
    pairs = {(C.parse_caption(t)[0], w) for t in test_text for w in C.parse_caption(t)[1].values()}
    assert all((label, value) in pairs for _, value, label in C.HELD_OUT)


# --- templates, synonyms, determinism

def test_captions_vary_in_template_synonym_and_attributes(train):
    text = train[2][:3000]
    joined = " | ".join(text)
    for names in C.CLASS_WORDS:
        for w in names:
            assert f" {w}" in f" {joined}", w
    for values in C.ATTRIBUTE_WORDS.values():
        for words in values.values():
            for w in words:
                assert f" {w}" in f" {joined}", w
    for marker in ("a photo of", "an image of", "that is", ", ", "a pair of", "facing", "pointing"):
        assert marker in joined, marker
    n_said = [len(C.parse_caption(t)[1]) for t in text]
    assert set(n_said) == {0, 1, 2, 3, 4}
    assert len(set(text)) > len(text) // 3


def test_captions_are_deterministic_in_seed_and_index(train):
    x, y = train[0][:60], train[1][:60]
    a = C.captions(x, y, seed=3)
    assert a == C.captions(x, y, seed=3)
    assert a[:30] == C.captions(x[:30], y[:30], seed=3)
    assert a != C.captions(x, y, seed=4)
    assert C.captions(x, y, seed=0, hold_out=True) == train[2][:60]


@pytest.mark.parametrize("template", range(len(C.TEMPLATES)))
def test_parse_inverts_every_template(template):
    rng = np.random.default_rng(template)
    for label in range(10):
        for words in ({}, {"size": "small"}, {"brightness": "light", "pattern": "patterned"},
                      {"size": "large", "brightness": "dark", "pattern": "plain"}):
            if label in C.FOOTWEAR:
                words = {**words, "facing": ["left", "right"][label % 2]}
            for _ in range(4):
                text = C.render(template, label, words, rng)
                assert C.parse_caption(text) == (label, words), text


def test_parse_rejects_a_text_without_or_with_two_classes():
    with pytest.raises(ValueError, match="'a dark zebra'.*names no class"):
        C.parse_caption("a dark zebra")
    with pytest.raises(ValueError, match="more than one class"):
        C.parse_caption("a coat and a bag")
    with pytest.raises(ValueError, match="two brightness values"):
        C.parse_caption("a dark light coat")
    assert C.parse_caption("an ankle boot") == (9, {})
    assert C.parse_caption("A Dark T-Shirt.") == (0, {"brightness": "dark"})


# --- bad input

@pytest.mark.parametrize("images, labels, match", [
    (np.zeros((2, 3, 28, 28), np.uint8), [0, 0], "images must have shape"),
    (np.zeros((2, 28, 27), np.uint8), [0, 0], "images must have shape"),
    (np.full((1, 28, 28), 300.0), [0], r"images must lie in \[0, 255\]"),
    (np.full((1, 28, 28), np.nan), [0], r"images must lie in \[0, 255\]"),
    (np.zeros((2, 28, 28), np.uint8), [0], r"labels must have shape \(2,\)"),
    (np.zeros((2, 28, 28), np.uint8), [0, 10], r"labels must be integers in \[0, 10\)"),
    (np.zeros((1, 28, 28), np.uint8), [-1], r"labels must be integers in \[0, 10\)"),
    (np.zeros((1, 28, 28), np.uint8), [0.5], r"labels must be integers"),
])
def test_bad_images_or_labels_name_the_argument(images, labels, match):
    for f in (C.attributes, C.caption_attributes, C.brightness, C.facing, C.captions, C.fit_thresholds):
        with pytest.raises(ValueError, match=match):
            f(images, labels)


def test_bad_caption_arguments_name_them():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="label must be an integer"):
        C.caption(10, {}, rng)
    with pytest.raises(ValueError, match="attrs must map"):
        C.caption(0, {"colour": "red"}, rng)
    with pytest.raises(ValueError, match="attrs must map"):
        C.caption(0, {"size": "huge"}, rng)
    with pytest.raises(ValueError, match="seed must be an integer"):
        C.captions(canvas(), [0], seed=-1)
    with pytest.raises(ValueError, match="attrs must hold the attribute"):
        C.is_held_out([0], {"size": np.array(["small"])})
    for q in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="q must"):
            C.fit_thresholds(canvas(), [0], q=q)


def test_held_out_prompts_each_ask_for_a_held_out_combination():
    prompts = C.held_out_prompts(12, seed=3)
    assert len(set(prompts)) > 6 and prompts == C.held_out_prompts(12, seed=3)
    for i, text in enumerate(prompts):
        label, attrs = C.parse_caption(text)
        name, value, k = C.HELD_OUT[i % len(C.HELD_OUT)]
        assert label == k and attrs == {name: value}, text
