"""What a deploy applies beyond ``prefect.yaml``: the zombie-run automation and the style list.

Run after ``prefect deploy --all`` (``tools/stack.sh up`` does; in Azure run it the same way):
``python -m deployments.post_deploy``. Idempotent.

* **Crashed-run detection**, Prefect's documented zombie detection: flow runs send a heartbeat
  event every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds; a run whose heartbeats stop for
  :data:`MISSED_HEARTBEATS` periods without a final state is marked Crashed, which frees its work
  pool slot and starts ``recover-crashed-run`` (``prefect.yaml``). ``prefect.yaml``'s triggers
  belong to deployments and can only start runs, so this automation is applied here.
* **Style dropdown**: the flow's schema lists the shipped styles (no network at import); the
  registered ones are added to the deployed schema here.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.settings import get_current_settings

logger = logging.getLogger("post_deploy")  # not "restyle": no flow run to log to

ZOMBIE_AUTOMATION = "Mark flow runs whose heartbeat stopped as Crashed"
MISSED_HEARTBEATS = 3
FINAL_EVENTS = ("Completed", "Failed", "Cancelled", "Crashed")


def zombie_automation(heartbeat_seconds: int) -> AutomationCore:
    """The automation that marks a run Crashed after ``MISSED_HEARTBEATS`` silent periods."""
    window = timedelta(seconds=MISSED_HEARTBEATS * heartbeat_seconds)
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=f"A flow run that sent a heartbeat and then neither another one nor a final "
        f"state within {int(window.total_seconds())} s lost its process (a killed worker or "
        "machine): it is marked Crashed, its slot is freed and recover-crashed-run reports, "
        "cleans up and retries it once.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in FINAL_EVENTS)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=window,
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"no heartbeat for {int(window.total_seconds())} s: the run's process is gone",
        )],
    )


def apply_automation(automation: AutomationCore) -> str:
    """Create ``automation``, or update the one of the same name; returns its id."""
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(automation.name)
        for extra in existing[1:]:  # one automation per name
            client.delete_automation(extra.id)
        if existing:
            client.update_automation(existing[0].id, automation)
            return str(existing[0].id)
        return str(client.create_automation(automation))


def heartbeat_seconds() -> int:
    """The heartbeat period flow runs use (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``)."""
    value = get_current_settings().flows.heartbeat_frequency
    if value is None:
        raise SystemExit("PREFECT_FLOWS_HEARTBEAT_FREQUENCY is unset: flow runs send no "
                         "heartbeats, so crashed runs could not be detected")
    return max(int(value), 30)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seconds = heartbeat_seconds()
    automation_id = apply_automation(zombie_automation(seconds))
    logger.info("automation %r (%s): heartbeat every %d s", ZOMBIE_AUTOMATION, automation_id,
                seconds)

    from tasks.settings import RestyleSettings
    from tasks.storage import make_blob_store
    from tasks.styles import known_style_names
    from tasks.training import update_style_choices

    settings = RestyleSettings()
    names = known_style_names(make_blob_store(settings.storage), settings)
    update_style_choices(names, logger)


if __name__ == "__main__":
    main()
