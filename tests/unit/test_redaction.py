"""The one redaction rule: URL credentials, bearer tokens, secret fields, provider-format keys
and registered secrets are cut out of text, values, log records and MLflow params."""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest

from infra.llm import OpenAICompatibleLLM
from infra.redaction import (
    REDACTED,
    install_log_redaction,
    redact,
    redact_value,
    register_secret,
)

SECRET = "Zq8vLx2pWm4nRt6y"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"http://user:{SECRET}@host:8000/v1#m", "http://***@host:8000/v1#m"),
        (f"http://user%3A{SECRET}@host/v1", "http://***@host/v1"),
        (f"https://h/v1?api_key={SECRET}&x=1", "https://h/v1?api_key=***&x=1"),
        (f"https://h/v1?key={SECRET}", "https://h/v1?key=***"),
        (f"https://h/v1?access_token={SECRET}#m", "https://h/v1?access_token=***#m"),
        (f"Authorization: Bearer {SECRET}", "Authorization: Bearer ***"),
        (f"api_key={SECRET} rest", "api_key=*** rest"),
        (f'{{"password": "{SECRET}"}}', '{"password": "***"}'),
        ("key sk-proj-abcdefghijklmnopqrstuvwx1234", "key ***"),
        # ordinary text and figures stay as they are
        (
            "max_new_tokens=32 tokenizer=gpt2 author=me",
            "max_new_tokens=32 tokenizer=gpt2 author=me",
        ),
        (
            "http://127.0.0.1:8000/v1#genai-rag@champion",
            "http://127.0.0.1:8000/v1#genai-rag@champion",
        ),
    ],
)
def test_credentials_are_cut_out_of_text(text, expected):
    assert redact(text) == expected


def test_a_registered_secret_is_cut_out_raw_and_percent_encoded():
    secret = "p@ss/w0rd+x y"
    register_secret(secret)
    assert redact(f"a {secret} b {quote(secret, safe='')} c") == f"a {REDACTED} b {REDACTED} c"


def test_values_are_redacted_through_containers_and_secret_fields_lose_their_value():
    value = {
        "api_key": "short",
        "api_key_env": "OPENAI_API_KEY",  # a variable's name, not a secret
        "endpoints": [f"http://u:{SECRET}@h/v1#m"],
        "max_new_tokens": 32,
    }
    assert redact_value(value) == {
        "api_key": REDACTED,
        "api_key_env": "OPENAI_API_KEY",
        "endpoints": ["http://***@h/v1#m"],
        "max_new_tokens": 32,
    }


def test_every_log_record_is_redacted_with_its_traceback(caplog):
    install_log_redaction()
    log = logging.getLogger("test.redaction")
    url = f"http://user:{SECRET}@host/v1"
    with caplog.at_level(logging.INFO, logger="test.redaction"):
        log.info("calling %s", url)
        try:
            raise RuntimeError(f"POST {url} failed")
        except RuntimeError:
            log.exception("it failed")
    assert SECRET not in caplog.text
    assert "http://***@host/v1" in caplog.text
    assert all(SECRET not in (r.exc_text or "") for r in caplog.records)


def test_an_endpoint_url_with_credentials_sends_them_as_auth_and_never_shows_them():
    llm = OpenAICompatibleLLM(f"http://bob:{SECRET}@127.0.0.1:9/v1", "m", max_retries=0)
    assert SECRET not in repr(llm) and SECRET not in llm.url
    assert llm.url == "http://127.0.0.1:9/v1/completions"
    with pytest.raises(Exception) as failure:  # nothing listens on port 9
        llm.generate(["hi"])
    assert SECRET not in str(failure.value)
    assert redact(f"echo {SECRET}") == f"echo {REDACTED}"  # the password is known from now on
