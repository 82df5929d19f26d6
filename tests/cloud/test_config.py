"""The cloud clients' sections: ``[imds]`` and ``[aws]``, their rules and defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from configs import error_of, load

from agent.cloud.config import AwsConfig, ImdsConfig


def test_the_defaults_are_what_an_empty_file_gives(tmp_path: Path) -> None:
    cfg = load(tmp_path, "")
    assert cfg.imds == ImdsConfig() and type(cfg.imds) is ImdsConfig
    assert cfg.aws == AwsConfig() and type(cfg.aws) is AwsConfig
    assert (cfg.imds.endpoint, cfg.imds.token_ttl_seconds) == ("http://169.254.169.254", 21600)


def test_the_metadata_endpoint_is_plain_http_without_a_trailing_slash(tmp_path: Path) -> None:
    assert load(tmp_path, "[imds]\nendpoint = 'http://127.0.0.1:8111/'\n").imds.endpoint == (
        "http://127.0.0.1:8111")
    assert error_of(tmp_path, "[imds]\nendpoint = 'https://169.254.169.254'\n") == (
        "imds.endpoint: must be an http:// URL (IMDS speaks plain HTTP)")
    assert error_of(tmp_path, "[imds]\nendpoint = 'http://'\n").startswith(
        "imds.endpoint: must be an http:// URL")


@pytest.mark.parametrize(("text", "key"), [
    ("[imds]\ntimeout_seconds = 'soon'\n", "imds.timeout_seconds: Input should be a valid"),
    ("[imds]\ntimeout_seconds = 0.05\n", "imds.timeout_seconds"),
    ("[imds]\ntoken_ttl_seconds = 0\n", "imds.token_ttl_seconds"),
    ("[imds]\ntoken_ttl_seconds = 21601\n", "imds.token_ttl_seconds"),
    ("[imds]\nmax_wait_seconds = 3601\n", "imds.max_wait_seconds"),
    ("[aws]\nmax_wait_seconds = 0.5\n", "aws.max_wait_seconds"),
    ('[aws]\nregion = "eu-west-1\\n"\n', "aws.region"),
])
def test_each_bound_names_its_key(tmp_path: Path, text: str, key: str) -> None:
    assert error_of(tmp_path, text).startswith(key)
