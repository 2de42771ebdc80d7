"""API keys: created by `llmq keys create`, stored only as sha256 under llmq:key:<hex>,
checked in constant time. Static keys (LLMQ_API_KEYS) are hashed at startup the same way."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import msgspec

from workers.protocol import PREFIX, api_key_key

KEY_PREFIX = "sk-llmq-"
KEY_PATTERN = PREFIX + "key:*"


class KeyRecord(msgspec.Struct, kw_only=True):
    tenant: str
    created_at: float
    hint: str  # the key's first characters, to tell keys apart in `llmq keys list`


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class StaticKeys:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._digests = [bytes.fromhex(hash_key(k)) for k in keys]

    def matches(self, digest_hex: str) -> bool:
        digest = bytes.fromhex(digest_hex)
        found = False
        for known in self._digests:  # no early exit: time does not depend on which key matched
            found |= hmac.compare_digest(known, digest)
        return found


async def lookup(redis, digest_hex: str) -> KeyRecord | None:
    """The record of a key created with the CLI (redis.asyncio client)."""
    raw = await redis.get(api_key_key(digest_hex))
    return msgspec.json.decode(raw, type=KeyRecord) if raw else None


# ---- admin side (sync client, used by the CLI) -----------------------------------------------


def create_key(redis, tenant: str) -> tuple[str, KeyRecord]:
    key = new_key()
    record = KeyRecord(tenant=tenant, created_at=time.time(), hint=key[: len(KEY_PREFIX) + 4])
    redis.set(api_key_key(hash_key(key)), msgspec.json.encode(record))
    return key, record


def list_keys(redis) -> list[tuple[str, KeyRecord]]:
    found = []
    for name in redis.scan_iter(match=KEY_PATTERN, count=500):
        raw = redis.get(name)
        if raw:
            digest = (name.decode() if isinstance(name, bytes) else name).rsplit(":", 1)[1]
            found.append((digest, msgspec.json.decode(raw, type=KeyRecord)))
    return sorted(found, key=lambda item: item[1].created_at)


def revoke_key(redis, key_or_digest_prefix: str) -> list[str]:
    """Revoke by the key itself or by a prefix of its sha256 (as `list` shows). Returns digests revoked."""
    if key_or_digest_prefix.startswith(KEY_PREFIX):
        digests = [hash_key(key_or_digest_prefix)]
    else:
        prefix = key_or_digest_prefix.lower()
        matching = [d for d, _ in list_keys(redis) if d.startswith(prefix)]
        if len(matching) > 1:
            raise ValueError(f"{len(matching)} keys start with {prefix!r}; give more characters")
        digests = matching
    return [d for d in digests if redis.delete(api_key_key(d))]
