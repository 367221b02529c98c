"""Realistic ARI event frames (shapes from Asterisk's events.json / channels.json,
reference/dialers.md section 1.1). Shared by the ARI tests and the loopback server."""

from __future__ import annotations

from typing import Any

APP = "dialer"
EID = "00:0c:29:ab:cd:ef"


def ts(second: float) -> str:
    """ARI's %FT%T.%q%z on 2025-03-14 10:01:<second>."""
    whole = int(second)
    millis = round((second - whole) * 1000)
    minute, sec = 1 + whole // 60, whole % 60
    return f"2025-03-14T10:{minute:02d}:{sec:02d}.{millis:03d}+0000"


def channel(
    cid: str,
    state: str = "Down",
    *,
    name: str | None = None,
    caller: str = "+15125550100",
    connected: str = "",
    channelvars: dict[str, str] | None = None,
) -> dict[str, Any]:
    ch: dict[str, Any] = {
        "id": cid,
        "protocol_id": f"{cid}@10.0.0.5",
        "name": name or f"PJSIP/carrier-{abs(hash(cid)) % 0xFFFFFFFF:08x}",
        "state": state,
        "caller": {"name": "", "number": caller},
        "connected": {"name": "", "number": connected},
        "accountcode": "",
        "dialplan": {
            "context": "dialer-out",
            "exten": "s",
            "priority": 1,
            "app_name": "",
            "app_data": "",
        },
        "creationtime": ts(52.301),
        "language": "en",
    }
    if channelvars is not None:
        ch["channelvars"] = channelvars
    return ch


def ev(etype: str, second: float, **fields: Any) -> dict[str, Any]:
    return {
        "type": etype,
        "timestamp": ts(second),
        "application": APP,
        "asterisk_id": EID,
        **fields,
    }


def originate_call(
    cid: str,
    *,
    amd: str | None = "MACHINE",
    cause: int = 16,
    cause_txt: str = "Normal Clearing",
    lead: str | None = "48213",
    disposition: str | None = None,
    agent: str | None = None,
    answered: bool = True,
    t0: float = 52.0,
) -> list[dict[str, Any]]:
    """An ARI originate with app=dialer: ring, answer, AMD in dialplan, hang up."""
    out = [
        ev("ChannelCreated", t0 + 0.3, channel=channel(cid)),
        ev("ChannelStateChange", t0 + 2.0, channel=channel(cid, "Ringing")),
    ]
    if lead is not None:
        out.append(
            ev("ChannelVarset", t0 + 0.4, variable="LEAD_ID", value=lead, channel=channel(cid))
        )
    if answered:
        up = channel(cid, "Up", connected="+15125550199")
        out.append(ev("ChannelStateChange", t0 + 8.0, channel=up))
        if amd is not None:
            out.append(
                ev("StasisStart", t0 + 10.0, args=[amd, "INITIALSILENCE-2500-2500"], channel=up)
            )
        if agent is not None:
            out.append(ev("ChannelVarset", t0 + 20.0, variable="AGENT_ID", value=agent, channel=up))
        if disposition is not None:
            out.append(
                ev(
                    "ChannelVarset",
                    t0 + 25.0,
                    variable="DISPOSITION",
                    value=disposition,
                    channel=up,
                )
            )
    final_state = "Up" if answered else "Ringing"
    out.append(
        ev(
            "ChannelHangupRequest",
            t0 + 27.9,
            cause=cause,
            channel=channel(cid, final_state),
        )
    )
    out.append(
        ev(
            "ChannelDestroyed",
            t0 + 28.0,
            cause=cause,
            cause_txt=cause_txt,
            channel=channel(cid, final_state, connected="+15125550199"),
        )
    )
    return out
