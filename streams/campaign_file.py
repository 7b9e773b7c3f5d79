"""The campaign file on disk: read it, then let the core parse the text.

The core (:mod:`agents.core.campaigns`) stays free of file access; reading
``RELEVANZ_CAMPAIGNS`` is the platform's job.
"""

from __future__ import annotations

from pathlib import Path

from agents.core.campaigns import CampaignBook, CampaignFileError, parse_campaigns


def load_campaigns(path: str | Path) -> CampaignBook:
    """The book in the TOML file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignFileError(f"{path}: cannot read the campaign file ({exc})") from exc
    return parse_campaigns(text, str(path))
