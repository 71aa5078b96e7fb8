"""lean candidate metrics: BLEU-4 and CIDEr-D of candidates in typed columns, out of metric_values

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

A full MILS run writes 2.5M candidates; their BLEU-4 and CIDEr-D took one ``metric_values`` row each
(text scope, subject, metric and implementation, repeated in a unique index): 1.2 GB of a 2.1 GB
SQLite store. They now live in ``candidate_eval_values`` (evaluation id, candidate id, bleu_4,
cider; WITHOUT ROWID on SQLite: ~16 bytes a value), each evaluation of a run's candidates being a
``candidate_evals`` row naming the implementation of each column.

Existing values are moved: per run, each metric's implementations (newest first) are paired into
evaluations (the first Bleu_4 implementation with the first CIDEr one, and so on; a metric with more
implementations than the other gets evaluations with the other column NULL), then their rows leave
``metric_values``. Candidate-scope rows of other metrics stay where they are. Downgrade moves them
back (``item_id`` from the candidate, ``created_at`` from the evaluation; values whose candidate
is gone are dropped: ``metric_values.candidate_id`` is a foreign key).
"""
from typing import Any, Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = {"Bleu_4": "bleu_4", "CIDEr": "cider"}


def upgrade() -> None:
    op.create_table(
        "candidate_evals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("bleu_4_implementation", sa.String(length=200), nullable=True),
        sa.Column("cider_implementation", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_candidate_evals_run_id_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidate_evals")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("candidate_evals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_candidate_evals_run_id"), ["run_id"], unique=False)
    op.create_table(
        "candidate_eval_values",
        sa.Column("eval_id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("bleu_4", sa.Float(), nullable=True),
        sa.Column("cider", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["eval_id"], ["candidate_evals.id"],
                                name=op.f("fk_candidate_eval_values_eval_id_candidate_evals"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("eval_id", "candidate_id", name=op.f("pk_candidate_eval_values")),
        sqlite_with_rowid=False,
    )
    _move_values_out()


def _move_values_out() -> None:
    """Pair each run's implementations into evaluations and copy their values, then delete the rows."""
    conn = op.get_bind()
    groups = conn.execute(sa.text(
        "SELECT run_id, metric, implementation, max(created_at) FROM metric_values "
        "WHERE scope = 'candidate' AND metric IN ('Bleu_4', 'CIDEr') "
        "GROUP BY run_id, metric, implementation ORDER BY run_id, metric, max(id) DESC")).all()
    by_run: dict[int, dict[str, list[tuple[str, Any]]]] = {}
    for run_id, metric, impl, created in groups:
        by_run.setdefault(int(run_id), {}).setdefault(metric, []).append((impl, created))
    for run_id, metrics in by_run.items():
        bleu, cider = metrics.get("Bleu_4", []), metrics.get("CIDEr", [])
        for k in range(max(len(bleu), len(cider))):
            pair = {"Bleu_4": bleu[k] if k < len(bleu) else None, "CIDEr": cider[k] if k < len(cider) else None}
            created = max(p[1] for p in pair.values() if p is not None)
            eval_id = conn.execute(sa.text(
                "INSERT INTO candidate_evals (run_id, bleu_4_implementation, cider_implementation, created_at) "
                "VALUES (:run, :bleu, :cider, :created) RETURNING id"),
                {"run": run_id, "bleu": pair["Bleu_4"] and pair["Bleu_4"][0],
                 "cider": pair["CIDEr"] and pair["CIDEr"][0], "created": created}).scalar_one()
            _copy_pair(conn, run_id, int(eval_id), {m: p[0] for m, p in pair.items() if p is not None})
    conn.execute(sa.text("DELETE FROM metric_values WHERE scope = 'candidate' AND metric IN ('Bleu_4', 'CIDEr')"))


def _copy_pair(conn: Any, run_id: int, eval_id: int, impls: dict[str, str]) -> None:
    """One evaluation's values: a full outer join of its metrics' rows by candidate."""
    parts = {m: f"(SELECT candidate_id, value FROM metric_values WHERE run_id = :run AND scope = 'candidate' "
                f"AND metric = '{m}' AND implementation = :impl_{COLUMNS[m]})" for m in impls}
    params = {"run": run_id, "eval": eval_id, **{f"impl_{COLUMNS[m]}": i for m, i in impls.items()}}
    if len(parts) == 1:
        (metric, sub), = parts.items()
        conn.execute(sa.text(f"INSERT INTO candidate_eval_values (eval_id, candidate_id, {COLUMNS[metric]}) "
                             f"SELECT :eval, candidate_id, value FROM {sub} v WHERE candidate_id IS NOT NULL"), params)
        return
    # Both metrics: candidates with BLEU-4 (and their CIDEr-D), then those with CIDEr-D alone.
    conn.execute(sa.text(
        f"INSERT INTO candidate_eval_values (eval_id, candidate_id, bleu_4, cider) "
        f"SELECT :eval, b.candidate_id, b.value, c.value FROM {parts['Bleu_4']} b "
        f"LEFT JOIN {parts['CIDEr']} c ON c.candidate_id = b.candidate_id WHERE b.candidate_id IS NOT NULL"), params)
    conn.execute(sa.text(
        f"INSERT INTO candidate_eval_values (eval_id, candidate_id, cider) "
        f"SELECT :eval, c.candidate_id, c.value FROM {parts['CIDEr']} c "
        f"WHERE c.candidate_id IS NOT NULL AND NOT EXISTS "
        f"(SELECT 1 FROM {parts['Bleu_4']} b WHERE b.candidate_id = c.candidate_id)"), params)


def downgrade() -> None:
    conn = op.get_bind()
    for metric, column in COLUMNS.items():
        conn.execute(sa.text(
            "INSERT INTO metric_values (run_id, metric, scope, subject, item_id, candidate_id, value, "
            "implementation, details, created_at) "
            f"SELECT e.run_id, '{metric}', 'candidate', 'candidate:' || CAST(v.candidate_id AS VARCHAR(20)), "
            f"c.item_id, v.candidate_id, v.{column}, e.{column}_implementation, NULL, e.created_at "
            "FROM candidate_eval_values v JOIN candidate_evals e ON e.id = v.eval_id "
            "JOIN candidates c ON c.id = v.candidate_id "  # values of deleted candidates cannot go back
            f"WHERE v.{column} IS NOT NULL AND e.{column}_implementation IS NOT NULL"))
    op.drop_table("candidate_eval_values")
    with op.batch_alter_table("candidate_evals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_candidate_evals_run_id"))
    op.drop_table("candidate_evals")
