"""The SOAP ``login`` call (``POST /services/Soap/u/NN.N``), which some clients use for a session.

simple-salesforce logs in this way when given a username, password and security token without a
connected app: it reads ``sessionId`` and ``serverUrl`` from the response, and ``faultcode`` /
``faultstring`` from a failure (HTTP 500, ``INVALID_LOGIN``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from sfsim.org import Org

__all__ = ["soap_login"]

_VERSION_RE: Final = re.compile(r"^/services/Soap/u/(\d+\.\d)/?")
_ENVELOPE: Final = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns="urn:partner.soap.sforce.com" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{}</soapenv:Body>'
    "</soapenv:Envelope>"
)


def _element(xml: str, name: str) -> str | None:
    m = re.search(rf"<(?:\w+:)?{name}\b[^>]*>(.*?)</(?:\w+:)?{name}>", xml, re.DOTALL)
    if m is None:
        return None
    text = m.group(1)
    for entity, char in (
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", '"'),
        ("&apos;", "'"),
        ("&amp;", "&"),
    ):
        text = text.replace(entity, char)
    return text


def _fault(code: str, message: str) -> tuple[int, str]:
    body = (
        f"<soapenv:Fault><faultcode>sf:{code}</faultcode><faultstring>{escape(message)}"
        f'</faultstring><detail><sf:LoginFault xmlns:sf="urn:fault.partner.soap.sforce.com"'
        f"><sf:exceptionCode>{code}</sf:exceptionCode><sf:exceptionMessage>"
        f"{escape(message)}</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault>"
    )
    return 500, _ENVELOPE.format(body)


def soap_login(org: Org, path: str, body: bytes) -> tuple[int, str]:
    """Answer a SOAP request: ``login`` issues a session like the password flow does."""
    m = _VERSION_RE.match(path)
    xml = body.decode("utf-8", "replace")
    if m is None or "login" not in xml:
        return _fault("INVALID_OPERATION", "Only the login call is supported by this org emulator")
    username = _element(xml, "username")
    password = _element(xml, "password") or ""
    cfg = org.oauth
    if username != cfg.username or password not in (
        cfg.password,
        cfg.password + cfg.security_token,
    ):
        return _fault(
            "INVALID_LOGIN",
            "INVALID_LOGIN: Invalid username, password, security token; or user locked out.",
        )
    token = org.tokens.issue(org.user_id, "soap")
    version = m.group(1)
    base = org.instance_url
    result = (
        f"<loginResponse><result><metadataServerUrl>{base}/services/Soap/m/{version}/"
        f"{org.org_id[:15]}</metadataServerUrl><passwordExpired>false</passwordExpired>"
        f"<sandbox>false</sandbox><serverUrl>{base}/services/Soap/u/{version}/"
        f"{org.org_id[:15]}</serverUrl><sessionId>{escape(token)}</sessionId>"
        f"<userId>{org.user_id}</userId><userInfo><organizationId>{org.org_id}"
        f"</organizationId><userId>{org.user_id}</userId><userName>{escape(cfg.username)}"
        f"</userName></userInfo></result></loginResponse>"
    )
    return 200, _ENVELOPE.format(result)
