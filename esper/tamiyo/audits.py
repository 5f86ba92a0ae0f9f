"""Emrakul's heuristic audits under a Tamiyo name (`emrakul`): in a plane whose layout offers the audit ops
(`kasmina.audit_actions`), Tamiyo's own decisions can be Emrakul's. To audit beside any Tamiyo, set the world's
`emrakul.enabled` instead (the Run then calls the reaper after Tamiyo)."""

from __future__ import annotations

from esper.emrakul import EmrakulConfig, EmrakulReaper
from esper.tamiyo.registry import ControllerRequest, register_controller


@register_controller("emrakul", help="Emrakul's heuristic audits as Tamiyo's own decisions (default thresholds; "
                     "needs kasmina.audit_actions — to audit beside Tamiyo, set emrakul.enabled instead)")
def _emrakul(request: ControllerRequest):
    from esper.kasmina.config import KasminaConfig

    if request.spec is not None and not request.spec.audit:
        raise ValueError("controller 'emrakul' plays WITHER/REVIVE: the plane needs kasmina.audit_actions: true "
                         "(or set emrakul.enabled to audit beside any Tamiyo)")
    tempo = KasminaConfig().wither_tempo  # the plane's wither_tempo is not part of its action layout
    return lambda: EmrakulReaper(EmrakulConfig(enabled=True), tempo)
