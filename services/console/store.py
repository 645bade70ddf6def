"""MongoDB for the console: its people, their sessions and the sign-in attempts it throttles. No customer data.

Collections (database `<CRM_PREFIX>_console`):
- people: one document per person, under their e-mail address (lower case): name, role, argon2id hash, language.
- sessions: one per sign-in, under the SHA-256 of its cookie token: whose, its CSRF token, when it ends (TTL).
- sign_in_failures: one per failed sign-in, keyed `email:<address>` or `ip:<address>` (TTL after the window).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from services.console.domain import THROTTLE_WINDOW, Role, Throttle
from shared.mongo import Database

PEOPLE = "people"
SESSIONS = "sessions"
FAILURES = "sign_in_failures"


@dataclass(frozen=True)
class Person:
    email: str
    name: str
    role: Role
    password_hash: str
    language: str | None
    created_at: datetime

    @property
    def actor(self) -> str:
        """How the services' audit trail names this person (X-Rapport-Actor)."""
        named = f"{self.name} <{self.email}>"
        return named if named.isascii() and named.isprintable() else self.email  # a header carries ASCII only


@dataclass(frozen=True)
class Session:
    email: str
    csrf: str
    expires_at: datetime


async def ensure_indexes(db: Database) -> None:
    await db[SESSIONS].create_indexes(
        [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0), IndexModel([("email", ASCENDING)])]
    )
    await db[FAILURES].create_indexes(
        [
            IndexModel([("key", ASCENDING), ("at", ASCENDING)]),
            IndexModel([("at", ASCENDING)], expireAfterSeconds=int(THROTTLE_WINDOW.total_seconds())),
        ]
    )


def _person_of(doc: dict[str, Any]) -> Person:
    return Person(
        email=doc["_id"],
        name=doc["name"],
        role=doc["role"],
        password_hash=doc["password_hash"],
        language=doc.get("language"),
        created_at=doc["created_at"],
    )


async def add_person(db: Database, person: Person) -> bool:
    """Add someone; False when the address is taken already."""
    try:
        await db[PEOPLE].insert_one(
            {
                "_id": person.email,
                "name": person.name,
                "role": person.role,
                "password_hash": person.password_hash,
                "language": person.language,
                "created_at": person.created_at,
            }
        )
    except DuplicateKeyError:
        return False
    return True


async def find_person(db: Database, email: str) -> Person | None:
    found = await db[PEOPLE].find_one({"_id": email})
    return None if found is None else _person_of(found)


async def people(db: Database) -> list[Person]:
    return [_person_of(doc) for doc in await db[PEOPLE].find({}, sort=[("created_at", ASCENDING)]).to_list()]


async def anyone(db: Database) -> bool:
    return await db[PEOPLE].find_one({}, {"_id": 1}) is not None


async def set_language(db: Database, email: str, language: str) -> None:
    await db[PEOPLE].update_one({"_id": email}, {"$set": {"language": language}})


async def set_password_hash(db: Database, email: str, password_hash: str) -> None:
    await db[PEOPLE].update_one({"_id": email}, {"$set": {"password_hash": password_hash}})


async def remove_person(db: Database, email: str) -> None:
    await db[PEOPLE].delete_one({"_id": email})
    await db[SESSIONS].delete_many({"email": email})


async def open_session(db: Database, digest: str, session: Session, at: datetime) -> None:
    await db[SESSIONS].insert_one(
        {"_id": digest, "email": session.email, "csrf": session.csrf, "expires_at": session.expires_at, "at": at}
    )


async def find_session(db: Database, digest: str, now: datetime) -> Session | None:
    found = await db[SESSIONS].find_one({"_id": digest, "expires_at": {"$gt": now}})
    return None if found is None else Session(found["email"], found["csrf"], found["expires_at"])


async def extend_session(db: Database, digest: str, expires_at: datetime) -> None:
    await db[SESSIONS].update_one({"_id": digest}, {"$set": {"expires_at": expires_at}})


async def close_session(db: Database, digest: str) -> None:
    await db[SESSIONS].delete_one({"_id": digest})


async def record_failure(db: Database, email: str, ip: str, at: datetime) -> None:
    await db[FAILURES].insert_many([{"key": f"email:{email}", "at": at}, {"key": f"ip:{ip}", "at": at}])


async def throttle(db: Database, email: str, ip: str, now: datetime) -> Throttle:
    since = {"$gt": now - THROTTLE_WINDOW}
    by_email = await db[FAILURES].count_documents({"key": f"email:{email}", "at": since})
    by_ip = await db[FAILURES].count_documents({"key": f"ip:{ip}", "at": since})
    return Throttle(by_email, by_ip)


async def forget_failures(db: Database, email: str) -> None:
    await db[FAILURES].delete_many({"key": f"email:{email}"})
