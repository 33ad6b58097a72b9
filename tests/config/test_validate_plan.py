"""`vm-backup validate` prints each group's plan as the built DAG has it, in the task names of stages."""

from __future__ import annotations

import ast

from gce_vm_backup.backup import stages
from gce_vm_backup.config.models import load_config
from gce_vm_backup.dags.backup import build_dags, dag_id_for
from vm_backup_cli import validate
from vm_backup_cli.__main__ import main

from ..conftest import REPO

CONFIG = REPO / "dags" / "gce_vm_backup.yaml"


def test_validate_prints_each_tiers_per_vm_chain_and_the_report(capsys):
    assert main(["validate", str(CONFIG)]) == 0
    out = capsys.readouterr().out.splitlines()
    config = load_config(CONFIG)
    dags = build_dags(config)
    for group_id, group in config.groups.items():
        dag = dags[dag_id_for(group_id)]
        header = out.index(f"  {dag.dag_id}: {group.schedule or 'manual only'}, {len(dag.tasks)} tasks")
        for n in range(1, len(group.tier_list) + 1):
            line = out[header + n]
            assert line.startswith(f"    {stages.tier_group(n)} (")
            chain = line.split("then per VM: ", 1)[1].split(" -> ")
            # every task of the tier's group, once, the precheck first
            in_group = {t.task_id for t in dag.tasks if t.task_id.startswith(stages.tier_task(n, ""))}
            assert {stages.tier_task(n, name.removesuffix(" (teardown)")) for name in chain} == in_group
            assert chain[0] == stages.PRECHECK
            teardowns = {
                stages.tier_task(n, name.removesuffix(" (teardown)"))
                for name in chain
                if "(teardown)" in name
            }
            assert teardowns == {t.task_id for t in dag.tasks if t.is_teardown and t.task_id in in_group}


def test_the_chain_is_in_dependency_order():
    config = load_config(CONFIG)
    dag = next(iter(build_dags(config).values()))
    chain = [
        stages.tier_task(1, name.removesuffix(" (teardown)"))
        for name in validate.tier_chain(dag, 1).split(" -> ")
    ]
    for position, task_id in enumerate(chain):
        assert set(dag.get_task(task_id).upstream_task_ids) & set(chain) <= set(chain[:position])


def test_validate_spells_out_no_task_name():
    names = {value for key, value in vars(stages).items() if key.isupper() and isinstance(value, str)}
    tree = ast.parse((REPO / "composer" / "vm_backup_cli" / "validate.py").read_text())
    literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert literals & names == set()
