"""The certificates trigger sends the operations task by its registered name (the services never import tasks)."""

from certificates.tasks import send_certificate_operations
from certificates.triggers import operations_soon
from tests.conftest import queued_tasks


def test_a_burst_of_triggers_enqueues_the_registered_operations_task_once_and_force_enqueues_again(broker):
    assert [operations_soon() for _ in range(50)].count(True) == 1
    assert queued_tasks(broker) == [send_certificate_operations.name]
    assert operations_soon(force=True)
    assert queued_tasks(broker) == [send_certificate_operations.name] * 2
