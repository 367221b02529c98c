"""sfsim.testing: the fixture factory and control helper other engineers' tests use."""

from __future__ import annotations

from sfsim.server import SimOrg
from sfsim.testing import SimControl, sim_client, sim_fixture

tiny_sim = sim_fixture("tiny_sim", api_limit=2)


async def test_fixture_factory_applies_its_settings(tiny_sim: SimOrg) -> None:
    """A fixture made by sim_fixture runs an org with the given settings."""
    async with sim_client(tiny_sim) as sf:
        assert (await sf.get("limits")).status_code == 200
        assert (await sf.get("limits")).status_code == 200
        assert (await sf.get("limits")).status_code == 403


async def test_control_seed_records_and_stats(tiny_sim: SimOrg) -> None:
    """SimControl seeds records and reads them and the stats back."""
    async with SimControl.open(tiny_sim) as ctl:
        ids = await ctl.seed("Lead", [{"LastName": "A", "Company": "C"}])
        assert [r["Id"] for r in await ctl.records("Lead")] == ids
        assert (await ctl.stats())["records"]["Lead"] == 1
        settings = await ctl.faults(error_next=1)
        assert settings["error_next"] == 1
        await ctl.reset()
        assert await ctl.records("Lead") == []
