"""The composition root's bag of long-lived parts, built once per process.

``create_app`` and ``create_worker`` each build one from ``Settings``; tests build one
with a ``FrozenClock``. Nothing here is global.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postroom.clock import Clock, SystemClock
from postroom.config import Settings
from postroom.db.engine import Database, create_engine
from postroom.jobs.registry import JobRegistry
from postroom.security.secret_box import SecretBox
from postroom.security.tokens import TokenSigner
from postroom.tracking.buffer import EngagementBuffer


@dataclass
class AppContext:
    settings: Settings
    db: Database
    clock: Clock
    secret_box: SecretBox
    jobs: JobRegistry = field(default_factory=JobRegistry)
    _signers: dict[str, TokenSigner] = field(default_factory=dict)
    _engagement: EngagementBuffer | None = None

    def signer(self, purpose: str) -> TokenSigner:
        signer = self._signers.get(purpose)
        if signer is None:
            signer = TokenSigner(self.settings.signing_keys, purpose)
            self._signers[purpose] = signer
        return signer

    @property
    def engagement(self) -> EngagementBuffer:
        """The opens/clicks buffer of this process (flushed every second)."""
        if self._engagement is None:
            self._engagement = EngagementBuffer(self.db)
        return self._engagement

    @classmethod
    def build(
        cls, settings: Settings, *, clock: Clock | None = None, db: Database | None = None
    ) -> AppContext:
        settings.resolve_secrets()
        database = db or Database.from_engine(
            create_engine(
                settings.sqlalchemy_url,
                pool_size=settings.db_pool_size,
                sqlite_cache_mb=settings.sqlite_cache_mb,
            )
        )
        return cls(
            settings=settings,
            db=database,
            clock=clock or SystemClock(),
            secret_box=SecretBox(settings.signing_keys),
        )
