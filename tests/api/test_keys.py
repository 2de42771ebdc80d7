import hashlib

import redis
from click.testing import CliRunner

from api.cli import gateway, keys, settings_from_options
from api.keys import KEY_PREFIX, StaticKeys, bearer_token, hash_key, new_key


def test_hashing_and_static_keys():
    key = new_key()
    assert key.startswith(KEY_PREFIX) and len(key) > 40 and key != new_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    static = StaticKeys(("alpha", "beta"))
    assert static.matches(hash_key("beta")) and not static.matches(hash_key("gamma"))
    assert not StaticKeys(()).matches(hash_key("alpha"))


def test_bearer_token_parsing():
    assert bearer_token("Bearer sk-1") == "sk-1"
    assert bearer_token("bearer   sk-1 ") == "sk-1"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_keys_cli_create_list_revoke(redis_url):
    runner = CliRunner()
    created = runner.invoke(keys, ["create", "--tenant", "acme", "--redis-url", redis_url])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith(KEY_PREFIX)
    stored = redis.Redis.from_url(redis_url).get(f"llmq:key:{hash_key(key)}")
    assert stored and key.encode() not in stored  # only the hash names it; the key itself is not kept
    listed = runner.invoke(keys, ["list"], env={"LLMQ_REDIS_URL": redis_url})
    assert "acme" in listed.stdout and hash_key(key)[:12] in listed.stdout
    revoked = runner.invoke(keys, ["revoke", hash_key(key)[:12], "--redis-url", redis_url])
    assert revoked.exit_code == 0 and not redis.Redis.from_url(redis_url).exists(f"llmq:key:{hash_key(key)}")
    again = runner.invoke(keys, ["revoke", key, "--redis-url", redis_url])
    assert again.exit_code == 1


def test_gateway_options_from_environment(tmp_path, monkeypatch):
    env = {"LLMQ_REDIS_URL": "redis://example:1/2", "LLMQ_PORT": "9001", "LLMQ_MODELS": f"{tmp_path}/a {tmp_path}/b",
           "LLMQ_API_KEYS": "k1 k2", "LLMQ_REQUEST_TIMEOUT": "12.5", "LLMQ_MAX_QUEUED_REQUESTS": "7",
           "LLMQ_REQUIRE_KEYS": "true", "LLMQ_KEEPALIVE": "3"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    context = gateway.make_context("gateway", ["--max-attempts", "5"])
    settings = settings_from_options(**context.params)
    assert settings.redis_url == "redis://example:1/2" and settings.port == 9001
    assert settings.models == (f"{tmp_path}/a", f"{tmp_path}/b")
    assert settings.api_keys == ("k1", "k2") and settings.require_keys and settings.keys_enabled
    assert (settings.request_timeout_s, settings.max_queued_requests, settings.max_attempts) == (12.5, 7, 5)
    assert settings.keepalive_s == 3.0


def test_keys_are_off_by_default(monkeypatch):
    for name in ("LLMQ_REQUIRE_KEYS", "LLMQ_API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    settings = settings_from_options(**gateway.make_context("gateway", []).params)
    assert not settings.keys_enabled and settings.port == 8000
