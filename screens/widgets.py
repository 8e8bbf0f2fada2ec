"""Widgets the screens share: the always-visible status bar and the patient panel."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rich.text import Text
from textual.widgets import Input, Static

from workstation.desk import ClerkSession, DeskStatus, PatientView, format_yuan
from workstation.desk.i18n import I18n


class DeskInput(Input):
    """An input whose cursor stays still unless the app says it blinks: a
    blinking cursor redraws its field twice a second, which was ~0.6 % of a
    core on an idle desk (the desk's whole idle budget is 1 %). With
    ``advance=True``, Enter moves on to the next field
    (``WindowApp.action_advance``) instead of submitting."""

    def __init__(self, *args: Any, advance: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.advance = advance

    def on_mount(self) -> None:
        if not getattr(self.app, "cursor_blink", True):
            self.cursor_blink = False


BAR_CELLS = 12


def bootstrap_text(status: DeskStatus, i18n: I18n) -> str:
    """Where a bootstrap stands: the phase, a bar, bytes, percent and time left."""
    t = i18n.t
    progress = status.progress
    if progress is None:  # waiting: for a clerk's login, or the next try
        return t("status.bootstrap_wait" if status.has_session else "status.bootstrap_login")
    if progress.phase == "preparing":
        waited = int(time.monotonic() - progress.started)
        return t("status.bootstrap_preparing", seconds=waited)
    text = t(f"status.bootstrap_{progress.phase}")
    fraction = progress.fraction
    if fraction is not None:
        filled = round(fraction * BAR_CELLS)
        text += f" {'█' * filled}{'░' * (BAR_CELLS - filled)} {fraction:.0%}"
    if progress.total and progress.phase == "download":
        text += f" {progress.done / 1e6:,.0f}/{progress.total / 1e6:,.0f} MB"
    left = progress.seconds_left(time.monotonic())
    if left is not None:
        text += " " + t("status.time_left", time=i18n.duration(left))
    return text


class StatusBar(Static):
    """Online/offline, pending operations and the age of the oldest, last
    successful sync, open Sync issues, and who is at the desk."""

    _shown: object = None

    def show(
        self, status: DeskStatus, i18n: I18n, clerk: ClerkSession | None, now: datetime
    ) -> None:
        t = i18n.t
        if status.network_cut:
            link = t("status.net_cut")
        elif status.progress is not None or not status.replica_ready:
            link = bootstrap_text(status, i18n)
        elif status.online is None:
            link = t("status.connecting")
        elif not status.online:
            link = t("status.offline")
        elif not status.has_session:
            link = t("status.no_session")
        else:
            link = t("status.online")
        parts = [link, t("status.pending", count=status.pending)]
        if status.oldest_pending_at:
            age = (now - datetime.fromisoformat(status.oldest_pending_at)).total_seconds()
            parts[-1] += " (" + t("status.oldest", age=i18n.age(age)) + ")"
        if status.last_sync_at is not None:
            # to the minute: a sync every few seconds would redraw the bar each time
            parts.append(t("status.last_sync", time=status.last_sync_at.strftime("%H:%M")))
        else:
            parts.append(t("status.last_sync", time=t("status.never")))
        if status.open_issues:
            parts.append(t("status.issues", count=status.open_issues))
        if status.clock_skew_flagged:
            parts.append(t("status.skew", seconds=int(status.clock_skew_s)))
        if clerk is not None:
            who = t("status.clerk", name=clerk.name, roles=i18n.roles(clerk.roles))
            if clerk.mode == "offline":
                who += " · " + t("status.offline_login")
            parts.append(who)
        offline = status.online is False or status.network_cut
        shown = (" │ ".join(parts), offline, bool(status.open_issues))
        if shown == self._shown:
            return  # an idle desk draws nothing
        self._shown = shown
        self.set_class(offline, "-offline")
        self.set_class(bool(status.open_issues), "-issues")
        self.update(shown[0])


class PatientPanel(Static):
    """The selected patient: identity, cards, deposit balance, recent payments."""

    def show(self, view: PatientView | None, i18n: I18n) -> None:
        t = i18n.t
        if view is None:
            self.update(Text(t("cashier.no_patient"), style="italic"))
            return
        p = view.patient
        text = Text()
        text.append(f"{p.name}", style="bold")
        text.append(f"  {i18n.sex(p.sex)}  {p.birth_date}\n")
        text.append(f"{i18n.document(p.doc_type)}: {p.doc_no}\n")
        text.append(f"{t('col.phone')}: {p.phone}\n")
        if p.address:
            text.append(f"{t('patient.address')}: {p.address}\n")
        if view.pending:
            text.append(t("patient.provisional") + "\n", style="bold yellow")
        text.append("\n")
        text.append(f"{t('patient.balance')}: ", style="bold")
        text.append(f"¥{format_yuan(view.balance_fen)}\n", style="bold")
        if view.confirmed_balance_fen != view.balance_fen:
            text.append(
                f"  {t('patient.confirmed_balance')}: ¥{format_yuan(view.confirmed_balance_fen)}\n"
            )
        text.append(f"\n{t('patient.cards')}:\n", style="bold")
        if not view.cards:
            text.append("  " + t("patient.no_card") + "\n")
        for card in view.cards:
            mark = f" [{t('patient.pending_mark')}]" if card.pending else ""
            text.append(f"  {card.card_no}  {i18n.card_status(card.status)}{mark}\n")
        if view.active_card is None and view.cards:
            text.append("  " + t("patient.no_card") + "\n")
        if view.transfers:
            text.append(f"\n{t('patient.recent')}:\n", style="bold")
            for tr in view.transfers:
                mark = f" [{t('patient.pending_mark')}]" if tr.pending else ""
                text.append(
                    f"  {tr.at[5:16].replace('T', ' ')} {i18n.transfer_kind(tr.kind)} ¥{format_yuan(tr.amount_fen)} "
                    f"{i18n.method(tr.method)}{mark}\n"
                )
        self.update(text)
