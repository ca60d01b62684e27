"""A short flow through the Python client generated from docs/openapi.json (infra/client-flow.sh).

Registers an agent at the endpoint of one of the stack's example agents, and a second one that
requires it; submits a workflow, waits for it to finish, lists the workflows and reads the
history. Every answer must have the documented status and parse into the generated models;
anything else raises. Usage: client_flow.py API_URL
"""
import sys
import time
import uuid

from baton_client import Client
from baton_client.api.agents import list_agents, register_agent
from baton_client.api.workflows import (
    get_workflow,
    list_workflows,
    submit_workflow,
    task_events,
    workflow_history,
)
from baton_client.models import (
    AgentKind,
    AgentList,
    AgentRegistration,
    AgentView,
    TaskEvents,
    WorkflowAccepted,
    WorkflowDetail,
    WorkflowHistory,
    WorkflowList,
    WorkflowSubmission,
)

TERMINAL = {"succeeded", "failed", "cancelled"}


def expect(response, status, model):
    """The parsed body of an answer that must have `status` and parse as `model`."""
    if response.status_code != status or not isinstance(response.parsed, model):
        raise SystemExit(
            f"client-flow: expected {status} {model.__name__}, got {int(response.status_code)}: "
            f"{response.content[:500]!r}"
        )
    return response.parsed


def main(api):
    # raise_on_unexpected_status: a status the document does not list is an error.
    def client(tenant):
        return Client(base_url=api, headers={"X-Tenant-Id": tenant}, raise_on_unexpected_status=True, timeout=30)

    examples = expect(list_agents.sync_detailed(client=client("default"), capability="text.normalize"), 200, AgentList)
    endpoints = [a.endpoint for a in examples.agents if a.kind == AgentKind.HTTP and a.endpoint]
    if not endpoints:
        raise SystemExit("client-flow: the stack has no example http agent for text.normalize")

    tenant = f"client-flow-{uuid.uuid4().hex[:8]}"
    own = client(tenant)
    registration = AgentRegistration(name="normalizer", capabilities=["text.normalize"], endpoint=endpoints[0])
    agent = expect(register_agent.sync_detailed(client=own, body=registration), 201, AgentView)
    assert agent.kind == AgentKind.HTTP and agent.endpoint == endpoints[0], agent
    assert agent.requires == [], agent
    dependent = AgentRegistration(
        name="reporter", capabilities=["report.draft"], endpoint=endpoints[0], requires=["normalizer"]
    )
    dependent = expect(register_agent.sync_detailed(client=own, body=dependent), 201, AgentView)
    assert dependent.requires == ["normalizer"], dependent
    print(f"client-flow: registered {agent.name} and {dependent.name} (requires {dependent.requires})")

    submission = WorkflowSubmission.from_dict(
        {
            "name": "client-flow",
            "tasks": [
                {"id": "clean", "capability": "text.normalize", "input": {"text": "  Hello,   client  "}},
                {"id": "again", "capability": "text.normalize", "depends_on": ["clean"]},
            ],
        }
    )
    accepted = expect(submit_workflow.sync_detailed(client=own, body=submission), 202, WorkflowAccepted)
    workflow_id = accepted.workflow_id
    print(f"client-flow: submitted {workflow_id}")

    deadline = time.monotonic() + 120
    while True:
        detail = expect(get_workflow.sync_detailed(workflow_id, client=own), 200, WorkflowDetail)
        if detail.status in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"client-flow: {workflow_id} still {detail.status} after 120 s")
        time.sleep(0.25)
    if detail.status != "succeeded":
        raise SystemExit(f"client-flow: {workflow_id} ended {detail.status}: {detail.to_dict()}")
    outputs = {t.id: t.output for t in detail.tasks}
    print(f"client-flow: {workflow_id} succeeded; outputs {outputs}")

    listed = expect(list_workflows.sync_detailed(client=own, limit=10), 200, WorkflowList)
    if workflow_id not in [w.workflow_id for w in listed.workflows]:
        raise SystemExit(f"client-flow: {workflow_id} is not in the list: {listed.to_dict()}")

    history = expect(workflow_history.sync_detailed(workflow_id, client=own), 200, WorkflowHistory)
    events = [e.event for e in history.events]
    if not events or history.status != "succeeded":
        raise SystemExit(f"client-flow: unexpected history: {history.to_dict()}")
    print(f"client-flow: history of {len(events)} events: {', '.join(events)}")

    # A finished task's stream, read from the start: its end (the example agents answer whole).
    stream = expect(
        task_events.sync_detailed(workflow_id, "again", client=own, after=0, wait=0), 200, TaskEvents
    )
    kinds = [e.type_.value for e in stream.events]
    if not stream.done or kinds[-1:] != ["end"]:
        raise SystemExit(f"client-flow: unexpected stream: {stream.to_dict()}")
    print(f"client-flow: stream of {len(kinds)} events, done: {', '.join(kinds)}")
    print("client-flow: ok")


if __name__ == "__main__":
    main(sys.argv[1])
