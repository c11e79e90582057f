"""Settings declared once: CLI options, ROLECAST_* variables, rolecast.toml, and the errors for bad values."""

import click
import pytest
from click.testing import CliRunner

from rolecast.errors import SettingsError
from rolecast.settings import (
    GenerationSettings,
    PrepareSettings,
    click_options,
    from_env,
    load_config,
    parse_assignment,
    resolve,
)


def test_precedence_cli_over_env_over_config_over_default():
    config = {"generation": {"temperature": 0.3, "top_k": 7, "max_tokens": 11}}
    env = {"ROLECAST_TEMPERATURE": "0.5", "ROLECAST_TOP_K": "9"}
    s = resolve(GenerationSettings, {"temperature": 0.9}, config, env)
    assert (s.temperature, s.top_k, s.max_tokens, s.top_p) == (0.9, 9, 11, 0.92)


def test_env_lists_are_comma_separated():
    assert from_env(GenerationSettings, {"ROLECAST_STOP": "User:, You:"}) == {"stop": ["User:", "You:"]}


def test_flat_variables_set_every_section_and_sectioned_ones_one():
    from rolecast.settings import EvalSettings, ServeSettings, TelegramSettings, TrainSettings

    env = {"ROLECAST_SEED": "7", "ROLECAST_DB": "chats.db"}
    seeds = [resolve(cls, {}, {}, env).seed for cls in (PrepareSettings, GenerationSettings, EvalSettings, TrainSettings)
             if cls is not PrepareSettings] + [from_env(PrepareSettings, env)["seed"]]
    assert seeds == [7, 7, 7, "7"]
    assert resolve(ServeSettings, {}, {}, env).db == resolve(TelegramSettings, {}, {}, env).db == "chats.db"
    env["ROLECAST_GENERATION__SEED"] = "5"
    assert resolve(GenerationSettings, {}, {}, env).seed == 5, "the sectioned variable wins for its section"
    assert resolve(EvalSettings, {}, {}, env).seed == 7, "and only there"


def test_unknown_setting_lists_valid_ones():
    with pytest.raises(SettingsError) as err:
        resolve(GenerationSettings, config={"generation": {"temprature": 1}})
    assert "unknown setting 'temprature'" in str(err.value)
    assert "temperature" in str(err.value).split("valid settings:")[1]


def test_out_of_bounds_value():
    with pytest.raises(SettingsError, match="setting 'temperature'"):
        resolve(GenerationSettings, {"temperature": 9})


def test_required_field_is_named():
    with pytest.raises(SettingsError, match="setting 'character' is required"):
        resolve(PrepareSettings, {})


def test_config_file(tmp_path):
    path = tmp_path / "rolecast.toml"
    path.write_text("[generation]\ntemperature = 0.25\n")
    assert resolve(GenerationSettings, config=load_config(path)).temperature == 0.25
    path.write_text("[generation\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(SettingsError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_parse_assignment():
    assert parse_assignment(GenerationSettings, "temperature=0.5") == {"temperature": "0.5"}
    assert parse_assignment(GenerationSettings, "stop=a,b") == {"stop": ["a", "b"]}
    with pytest.raises(SettingsError, match="unknown setting 'temp'"):
        parse_assignment(GenerationSettings, "temp=1")


def test_updated_validates():
    s = GenerationSettings()
    assert s.updated(temperature="0.1").temperature == 0.1
    with pytest.raises(SettingsError):
        s.updated(nonsense=1)


def test_click_options_are_generated_from_fields():
    seen = {}

    @click.command()
    @click_options(PrepareSettings)
    def cmd(**options):
        seen.update(options)

    result = CliRunner().invoke(cmd, ["--character", "House", "--context-turns", "4", "--alias", "a=b",
                                      "--alias", "c=d", "--no-repair", "--split", "0.7,0.2,0.1"])
    assert result.exit_code == 0, result.output
    s = resolve(PrepareSettings, seen)
    assert (s.character, s.context_turns, s.alias, s.repair, s.split) == ("House", 4, ["a=b", "c=d"], False, (0.7, 0.2, 0.1))
    assert seen["min_words"] is None, "unset options stay None so config and env can fill them"
    help_text = CliRunner().invoke(cmd, ["--help"]).output
    assert "Preceding lines of the same scene" in help_text and "[default: 10]" in help_text


def test_a_negative_switch_is_one_plain_flag():
    import click
    from click.testing import CliRunner

    from rolecast.settings import BackendSettings, click_options

    @click.command()
    @click_options(BackendSettings)
    def command(**options):
        click.echo(repr(options["no_adapter"]))

    runner = CliRunner()
    assert runner.invoke(command, []).output.strip() == "None", "unset: left to env, config file and default"
    assert runner.invoke(command, ["--no-adapter"]).output.strip() == "True"
    assert "--no-no-adapter" not in runner.invoke(command, ["--help"]).output


def test_tests_never_see_the_developers_settings():
    import os

    from conftest import TEST_CONTROLS

    leaked = [k for k in os.environ if k.startswith("ROLECAST_") and k not in TEST_CONTROLS | {"ROLECAST_CONFIG"}]
    assert leaked == [], "the autouse fixture in conftest.py removes them"
    assert load_config() == {}, "./rolecast.toml is never read by a test"
