"""analytics/scrub.py: every kind of secret goes, ordinary text stays exactly as it was."""

from __future__ import annotations

import pytest

from llmsm.analytics.scrub import REDACTED, scrub

# Made-up secrets of each kind, shaped like the real ones.
SECRETS = {
    "anthropic": "sk-ant-api03-Zx8kQ2mN4pL6rT0vW3yB5cD7fG9hJ1kL3mN5pQ7rS9tU1vW3xY5z-AbCdEfAA",
    "openai_legacy": "sk-4fQm9ZtR2wXy7LpK3vN8bC1dE6gH0jS5uA2oI9yT7rW3",
    "openai_project": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh3iJk6lMn",
    "google": "AIzaSyD4f8Gh2jK5lM9nP3qR7sT1uV6wX0yZ2aB",
    "github_classic": "ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R",
    "github_oauth": "gho_16C7e42F292c6912E7710c838347Ae178B4a",
    "github_user": "ghu_16C7e42F292c6912E7710c838347Ae178B4a",
    "github_server": "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
    "github_refresh": "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246",
    "github_fine": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRS",
    "slack_bot": "xoxb-2937510927-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "slack_user": "xoxp-2937510927-1234567890123-1234567890123-0123456789abcdef0123456789abcdef",
    "aws_id": "AKIAIOSFODNN7EXAMPLE",
    "aws_session_id": "ASIAY34FZKBOKMUTVV7A",
}


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_each_kind_of_key_is_redacted(kind: str) -> None:
    secret = SECRETS[kind]
    for text in (secret, f"use {secret} here", f'{{"key": "{secret}"}}', f"KEY={secret}\n", f"({secret})"):
        out = scrub(text)
        assert secret not in out, (kind, out)
        assert REDACTED in out
    assert scrub(f"export KEY={secret} # done") == f"export KEY={REDACTED} # done"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
         f"Authorization: Bearer {REDACTED}"),
        ("curl -H 'authorization: bearer abcdefgh12345678' https://x", f"curl -H 'authorization: bearer {REDACTED}' https://x"),
        ('{"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}', f'{{"Authorization": "Basic {REDACTED}"}}'),
        ("Proxy-Authorization: Basic dXNlcjpwYXNzd29yZA==", f"Proxy-Authorization: Basic {REDACTED}"),
        ("x-api-key: 0123456789abcdef0123", f"x-api-key: {REDACTED}"),
        ("X-Goog-Api-Key=ABCDEFGH12345678", f"X-Goog-Api-Key={REDACTED}"),
        ("the token is bearer 9f8e7d6c5b4a39281706f5e4 ok", f"the token is bearer {REDACTED} ok"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
         f"aws_secret_access_key = {REDACTED}"),
        ('AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', f'AWS_SECRET_ACCESS_KEY="{REDACTED}"'),
        ("aws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nregion = eu",
         f"aws_secret_access_key: {REDACTED}\nregion = eu"),
    ],
)
def test_labelled_credentials_keep_their_label(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_pem_private_keys_whole_or_cut_off() -> None:
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZH\n"
    for kind in ("", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "):
        block = f"-----BEGIN {kind}PRIVATE KEY-----\n{body}-----END {kind}PRIVATE KEY-----"
        out = scrub(f"key:\n{block}\nafter")
        assert out == f"key:\n{REDACTED}\nafter", out
    cut = f"cat id_rsa\n-----BEGIN RSA PRIVATE KEY-----\n{body[:60]}…"
    assert scrub(cut) == f"cat id_rsa\n{REDACTED}"
    public = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"
    assert scrub(public) == public


@pytest.mark.parametrize(
    "text",
    [
        "task-sk-learning",
        "use the sk-learn library: from sklearn import svm",
        "risk-assessment and desk-booking-service-for-teams-2024",
        "ask-ant-colony-optimisation-0123456789abc",  # sk- inside a word
        "sk-short1",
        "sk-this-is-a-long-prose-identifier-without-digits",
        "AIza is how Google keys begin",
        "ghp_ short, gh_pages, ghost_protocol_1234567890abcdefghij",
        "xoxo-hugs and xoxb- alone",
        "AKIAshort, MAKIAIOSFODNN7EXAMPLE1",
        "the bearer of bad news; Bearer token rotation explained",
        "Authorization: Bearer",
        "authorization header missing",
        "def scrub(text): return text  # a 10 KB file of code is left alone",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "",
        "short words: a an the sk ak gh xox",
        "Ünïcödé text with 日本語 and emoji 🎉 stays",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert scrub(text) == text


def test_several_secrets_in_one_text_and_test_keys() -> None:
    from tests.conftest import TEST_KEYS

    text = " | ".join(f"{name}={key}" for name, key in TEST_KEYS.items())
    out = scrub(text)
    for key in TEST_KEYS.values():
        assert key not in out
    assert out.count(REDACTED) == len(TEST_KEYS) and out.startswith("anthropic=")

