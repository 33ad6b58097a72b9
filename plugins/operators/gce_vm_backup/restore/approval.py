"""``check_approval``: the replace-disks approval is checked before anything is changed.

The approval itself is the standard provider's ``ApprovalOperator`` with ``assigned_users`` set to the
group's ``restore_approval.approvers``: Airflow's API then lets only them respond (the auth manager's
``is_authorized_hitl_task``; note that the simple auth manager's all-admins mode lets anyone). This task,
right after it, checks the response again from public values only: the approval's result (XCom
``return_value``: ``responded_by_user`` ``{"id", "name"}``) and the run's ``triggering_user_name``
(``airflow.sdk.types.DagRunProtocol``):

- with ``approvers``, a response by anyone else is refused;
- with ``four_eyes: true``, a response by the user who triggered the run is refused, and so is every
  response to a run whose triggering user Airflow did not record (nobody can show it is another person's).

A refusal is one line, and the run fails there: the disks are created, and the VM stopped, only after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from gce_vm_backup.errors import BackupError


def approval_problem(
    response: Any,
    *,
    triggered_by: str | None,
    approvers: Sequence[str],
    four_eyes: bool,
    group: str,
) -> str | None:
    """Why the approval ``response`` (the ApprovalOperator's result) does not count, or None when it does.

    ``approvers``: the user ids allowed to approve (empty: anyone); ``triggered_by``: the run's
    ``triggering_user_name``."""
    user = response.get("responded_by_user") if isinstance(response, Mapping) else None
    if not isinstance(user, Mapping) or not (user.get("id") or user.get("name")):
        return "the approval names no user who gave it"
    user_id, user_name = str(user.get("id") or ""), str(user.get("name") or user.get("id"))
    who = user_name if user_name == user_id or not user_id else f"{user_name} (id {user_id})"
    if approvers and user_id not in approvers:
        return (
            f"{who} approved, but only {', '.join(approvers)} may approve a replace-disks restore of group "
            f"{group} (restore_approval.approvers)"
        )
    if four_eyes:
        if not triggered_by:
            return (
                "four_eyes is on and Airflow recorded no user who triggered this run, so the approval "
                "cannot be shown to be another person's"
            )
        if triggered_by in {user_id, user_name}:
            return (
                f"{who} approved the replace-disks restore they triggered themselves; four_eyes needs "
                "another user's approval"
            )
    return None


class CheckApprovalOperator(BaseOperator):
    """Refuse an approval that the group's ``restore_approval`` does not accept (see the module docstring).

    Returns ``{"approved_by", "triggered_by"}``. Raises BackupError, in one line, when the approval does not
    count; nothing was changed then.
    """

    group: str
    approvers: list[str]
    four_eyes: bool
    approval_task_id: str

    def __init__(
        self,
        *,
        group: str,
        approvers: Sequence[str] = (),
        four_eyes: bool = False,
        approval_task_id: str = "approve",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.group = group
        self.approvers = list(approvers)
        self.four_eyes = four_eyes
        self.approval_task_id = approval_task_id

    def execute(self, context: Any) -> dict[str, Any]:
        response = context["ti"].xcom_pull(task_ids=self.approval_task_id)
        triggered_by = getattr(context["dag_run"], "triggering_user_name", None)
        problem = approval_problem(
            response,
            triggered_by=triggered_by,
            approvers=self.approvers,
            four_eyes=self.four_eyes,
            group=self.group,
        )
        if problem:
            raise BackupError(f"Restore refused: {problem}. Nothing was changed.")
        user = response["responded_by_user"]
        self.log.info("Approval by %s accepted (run triggered by %s)", user.get("name"), triggered_by)
        return {"approved_by": dict(user), "triggered_by": triggered_by}
