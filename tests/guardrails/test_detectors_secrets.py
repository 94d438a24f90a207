"""The secrets detector: each credential format it knows, and look-alikes it leaves."""

from __future__ import annotations

import pytest

from bastion_guardrails.detectors import SecretsDetector, mask

# Built from pieces so that secret scanners reading this repository see no credential.
AWS_ACCESS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
GITHUB = "gh" + "p_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GITLAB = "gl" + "pat-" + "xY3kP9mN2qR7sT4vW8zA"
SLACK = "xo" + "xb-123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
GCP = "AI" + "za" + "SyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"
AZURE = "Xy1" + "8Q~" + "abcdefghijKLMNOPQRST0123456789uvwx"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEA7bq1x3hV0example0example0example0example\n"
    "-----END RSA PRIVATE KEY-----"
)


def kinds(text: str) -> list[str]:
    return [f.kind for f in SecretsDetector().find(text)]


@pytest.mark.parametrize(
    ("text", "kind", "secret"),
    [
        (f"my key is {AWS_ACCESS_KEY} ok", "aws_access_key", AWS_ACCESS_KEY),
        (f"aws_secret_access_key = {AWS_SECRET_KEY}", "aws_secret_key", AWS_SECRET_KEY),
        (f"export GITHUB_TOKEN={GITHUB}", "github_token", GITHUB),
        (f"token {GITLAB} for CI", "gitlab_token", GITLAB),
        (f"slack: {SLACK}", "slack_token", SLACK),
        (f"maps key {GCP}", "gcp_api_key", GCP),
        (f"client secret {AZURE} from the portal", "azure_client_secret", AZURE),
        (f"Authorization: Bearer {JWT}", "jwt", JWT),
        (f"here:\n{PEM}\nthanks", "private_key", PEM),
        ("postgres://admin:s3cr3tPass@db.example.com:5432/app", "connection_string", "s3cr3tPass"),
        ("password=hunter2", "password", "hunter2"),
        ('DB_PASSWORD: "correct-horse"', "password", "correct-horse"),
        ("spring.datasource.password: Tr0ub4dor&3", "password", "Tr0ub4dor&3"),
        ("Server=db;User Id=sa;Password=P@ssw0rd123;", "password", "P@ssw0rd123"),
        ("api_key = 'abcd1234efgh5678'", "credential", "abcd1234efgh5678"),
    ],
)
def test_credentials_are_found_and_masked(text: str, kind: str, secret: str) -> None:
    findings = SecretsDetector().find(text)
    assert kind in [f.kind for f in findings]
    masked = mask(text, findings)
    assert secret not in masked
    assert "[" in masked


def test_only_the_password_of_a_connection_string_is_masked() -> None:
    text = "postgres://admin:s3cr3tPass@db.example.com/app"
    assert (
        mask(text, SecretsDetector().find(text)) == "postgres://admin:[PASSWORD]@db.example.com/app"
    )


def test_an_unterminated_private_key_is_masked_to_the_end() -> None:
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"
    assert mask(text, SecretsDetector().find(text)) == "[PRIVATE KEY]"


@pytest.mark.parametrize(
    "text",
    [
        "Reset your password: click the link below.",
        "password=${DB_PASSWORD}",
        "password: ******",
        "password = <your password here>",
        "set token: 4096 for the context",
        "The password is stored in the vault.",
        "AKIA1234 is too short to be a key",
        "akiaiosfodnn7example in lower case is not a key id",
        "gh" + "p_short",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIE\n-----END CERTIFICATE-----",
        "postgres://user@db.example.com/app",
        "https://example.com:8080/path?q=1",
        "eyJhbGciOiJIUzI1NiJ9 is only a header",
        "sk-" + "tooShort123",
        "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ],
)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert kinds(text) == []


@pytest.mark.parametrize(
    ("text", "held"),
    [
        ("Your key is AKIAIOSF", "AKIAIOSF"),
        ("use " + "gh" + "p_a1B2", "gh" + "p_a1B2"),
        ("password=hun", "hun"),
        ("postgres://admin:s3cr", "admin:s3cr"),
        (
            "here is the key -----BEGIN RSA PRIVATE KEY-----\nMIIE",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
        ),
        ("a rule ---", "---"),
        ("Once upon a time", ""),
        ("password: ", ""),
        # The access key ID shown: what follows may be its secret key, held until whole.
        (f"the key {AWS_ACCESS_KEY} and secret wJalrXUtn", "wJalrXUtn"),
    ],
)
def test_a_streamed_tail_that_may_grow_into_a_secret_is_held(text: str, held: str) -> None:
    assert text[SecretsDetector().hold_from(text) :] == held


def test_an_aws_secret_key_beside_its_access_key_id_is_masked_however_introduced() -> None:
    """As a model writes them in prose, with no `name=` before the secret key."""
    text = f"Here's the key {AWS_ACCESS_KEY} and secret {AWS_SECRET_KEY}, keep them safe."
    findings = SecretsDetector().find(text)
    assert sorted(f.kind for f in findings) == ["aws_access_key", "aws_secret_key"]
    masked = mask(text, findings)
    assert AWS_SECRET_KEY not in masked
    assert AWS_ACCESS_KEY not in masked
    # Without its access key ID, a 40-character word is not taken for one; beside it, a
    # hex hash (one case of letters) is not either.
    assert kinds(f"a secret {AWS_SECRET_KEY} alone") == []
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert kinds(f"{AWS_ACCESS_KEY} was rotated in commit {commit}") == ["aws_access_key"]
