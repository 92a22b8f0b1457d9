"""Theme files: the shipped ones are valid, a bad one is refused with a one-line reason."""

from __future__ import annotations

import pytest

from bertui.tui.themes import (
    CHART_VARIABLES,
    ThemeError,
    builtin_themes,
    chart_color,
    parse_theme,
    user_themes,
)


def test_at_least_three_shipped_themes_with_chart_colours():
    themes = builtin_themes()
    assert len(themes) >= 3
    assert "bertui-night" in {t.name for t in themes}
    for theme in themes:
        assert set(CHART_VARIABLES) <= set(theme.variables), theme.name


@pytest.mark.parametrize("data, problem", [
    ("just a string", "must be a mapping"),
    ({"primary": "#fff"}, "has no name"),
    ({"name": "x"}, "no primary colour"),
    ({"name": "x", "primary": "#fff", "surface": "nope"}, "'nope' is not a colour"),
    ({"name": "x", "primary": "#fff", "colour": "#000"}, "unknown theme key"),
    ({"name": "x", "primary": "#fff", "dark": "yes"}, "dark must be true or false"),
])
def test_invalid_themes_say_why(data, problem):
    with pytest.raises(ThemeError, match=problem):
        parse_theme(data, "mine.yaml")


def test_user_themes_are_loaded_and_bad_ones_reported(tmp_path):
    folder = tmp_path / "themes"
    folder.mkdir()
    (folder / "good.yaml").write_text("name: good\nprimary: '#123456'\ndark: false\n")
    (folder / "bad.yaml").write_text("name: [unclosed\n")
    (folder / "mine.toml").write_text('name = "mine"\nprimary = "#654321"\n[variables]\n'
                                      'chart-train = "#ff0000"\n')
    (folder / "broken.toml").write_text('name = "broken\n')
    (folder / "notes.txt").write_text("not a theme")
    themes, problems = user_themes(tmp_path)
    assert sorted(t.name for t in themes) == ["good", "mine"]
    assert next(t for t in themes if t.name == "mine").variables["chart-train"] == "#ff0000"
    assert len(problems) == 2
    assert any("bad.yaml" in p and "not valid YAML" in p for p in problems)
    assert any("broken.toml" in p and "not valid TOML" in p for p in problems)


def test_chart_colours_fall_back_on_the_standard_ones():
    variables = {"primary": "#102030", "foreground": "#ffffff", "background": "#000000"}
    assert chart_color(variables, "chart-train") == (16, 32, 48)
    assert chart_color({**variables, "chart-train": "#ff0000"}, "chart-train") == (255, 0, 0)
    # a translucent colour is blended onto the background
    assert chart_color({**variables, "success": "#ffffff80"}, "model-finetuned")[0] in (
        127, 128)
