import pytest

from rnnkit.config import from_dict, parse_overrides, read_yaml
from rnnkit.errors import ConfigError
from rnnkit.tasks.cipher import CipherConfig


def test_overrides_become_typed_nested_values():
    raw = parse_overrides(["model.hidden_size=128", "train.lr=0.01", "model.bidirectional=true"])
    config = from_dict(CipherConfig, raw)
    assert config.model.hidden_size == 128
    assert config.train.lr == 0.01
    assert config.model.bidirectional is True
    assert config.data.shift == 13  # untouched defaults stay


def test_unknown_key_names_the_key_and_the_choices():
    with pytest.raises(ConfigError) as err:
        from_dict(CipherConfig, parse_overrides(["model.hiden_size=3"]))
    message = str(err.value)
    assert "'model.hiden_size'" in message and "hidden_size" in message


def test_bad_choice_names_the_choices():
    with pytest.raises(ConfigError, match=r"model\.rnn .*choices: lstm, gru, rnn"):
        from_dict(CipherConfig, {"model": {"rnn": "transformer"}})


def test_bad_types_are_refused():
    with pytest.raises(ConfigError, match="train.epochs"):
        from_dict(CipherConfig, {"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(CipherConfig, {"model": 3})
    with pytest.raises(ConfigError, match="train.epochs .from 1"):
        from_dict(CipherConfig, {"train": {"epochs": 0}})


def test_nullable_values_and_malformed_overrides():
    config = from_dict(CipherConfig, parse_overrides(["train.clip_norm=null"]))
    assert config.train.clip_norm is None
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["hidden_size"])


def test_yaml_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  hidden_size: 3\n   rnn: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        read_yaml(path)
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")


def test_a_partial_section_keeps_the_tasks_own_defaults():
    # The cipher's recipe trains at lr 0.01, not TrainConfig's generic 0.001.
    config = from_dict(CipherConfig, {"train": {"epochs": 2}})
    assert config.train.epochs == 2
    assert config.train.lr == CipherConfig().train.lr == 0.01


def test_values_that_would_misbehave_later_are_refused_now():
    with pytest.raises(ConfigError, match="train.clip_norm"):
        from_dict(CipherConfig, {"train": {"clip_norm": -1}})
    with pytest.raises(ConfigError, match="train.weight_decay"):
        from_dict(CipherConfig, {"train": {"weight_decay": -0.1}})
    from rnnkit.tasks.cipher import CipherTask

    with pytest.raises(ConfigError, match="model.layers"):
        CipherTask.build(from_dict(CipherConfig, {"model": {"layers": 0}}))
    with pytest.raises(ConfigError, match="model.dropout"):
        CipherTask.build(from_dict(CipherConfig, {"model": {"dropout": 2}}))


def test_an_old_key_name_is_one_line_naming_the_new_one():
    from rnnkit.tasks.embed import EmbedConfig

    for old, new in (("data.min_count", "data.min_freq"), ("model.dim", "model.embedding_dim")):
        section, key = old.split(".")
        with pytest.raises(ConfigError, match=f"config key '{old}' is now called '{new}'"):
            from_dict(EmbedConfig, {"data": {"train": "x.txt"}, section: {key: 5}})


def test_a_stored_config_with_old_names_is_read_with_the_new_ones():
    from rnnkit.config import upgrade
    from rnnkit.tasks.classify import ClassifyConfig

    stored = {"data": {"train": "t.tsv", "valid": "d.tsv"}, "model": {"min_freq": 3, "word_dim": 7}}
    moved = upgrade(stored)
    assert moved == {"data": {"train": "t.tsv", "dev": "d.tsv", "min_freq": 3},
                     "model": {"embedding_dim": 7}}  # fmt: skip
    assert stored["model"] == {"min_freq": 3, "word_dim": 7}  # the caller's copy is untouched
    config = from_dict(ClassifyConfig, {k: v for k, v in moved.items() if k != "data"}
                       | {"data": {"train": "t.tsv", "min_freq": 3}})  # fmt: skip
    assert config.data.min_freq == 3 and config.model.embedding_dim == 7
