"""Measured model capabilities, remembered in the store so each process need not probe again."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from promptloop.store.engine import session_scope
from promptloop.store.models import ModelCapability, utcnow


@dataclass(frozen=True)
class CapabilityRecord:
    """One (model, capability, probe) verdict of the store, bound to its engine: what the critic reads and writes."""

    engine: Engine
    model: str
    capability: str
    probe: str

    def recorded(self) -> ModelCapability | None:
        with Session(self.engine) as s:
            return s.exec(select(ModelCapability).where(
                ModelCapability.model == self.model, ModelCapability.capability == self.capability,
                ModelCapability.probe == self.probe)).first()

    def verdict(self) -> bool | None:
        """True or False once measured; None when this model was never measured with this probe."""
        row = self.recorded()
        return None if row is None else row.capable

    def remember(self, *, asked: int, valid: int, capable: bool) -> None:
        """Store the verdict (the latest measurement wins; two processes measuring at once both succeed)."""
        for _ in range(2):
            try:
                with session_scope(self.engine) as s:
                    row = s.exec(select(ModelCapability).where(
                        ModelCapability.model == self.model, ModelCapability.capability == self.capability,
                        ModelCapability.probe == self.probe)).first()
                    row = row or ModelCapability(model=self.model, capability=self.capability, probe=self.probe,
                                                 asked=0, valid=0, capable=capable)
                    row.asked, row.valid, row.capable, row.updated_at = asked, valid, capable, utcnow()
                    s.add(row)
                return
            except IntegrityError:  # another process inserted it first: update that row
                continue


def list_capabilities(engine: Engine) -> list[ModelCapability]:
    with Session(engine) as s:
        return list(s.exec(select(ModelCapability).order_by(ModelCapability.model, ModelCapability.capability)))


def forget_capabilities(engine: Engine, model: str | None = None) -> int:
    """Delete the verdicts of ``model`` (all when None) so the next process measures again; returns how many."""
    with session_scope(engine) as s:
        rows = s.exec(select(ModelCapability).where(ModelCapability.model == model) if model
                      else select(ModelCapability)).all()
        for r in rows:
            s.delete(r)
        return len(rows)
