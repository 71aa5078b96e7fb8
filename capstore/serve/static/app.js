// capstore serve: a few lines of plain JavaScript. Pages work without it.
"use strict";

// Compare: enable the button once two or more runs are ticked.
function wireCompare() {
  const form = document.getElementById("compare-form");
  if (!form) return;
  const button = document.getElementById("compare-button");
  const update = () => { button.disabled = form.querySelectorAll("input[name=runs]:checked").length < 2; };
  form.addEventListener("change", update);
  update();
}

// SQL: Ctrl+Enter (or Cmd+Enter) runs the statement.
function wireSql() {
  const box = document.getElementById("sql-box");
  if (!box) return;
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); box.form.submit(); }
  });
}

// Live progress: pages of running runs name a JSON URL in data-poll; progress and status follow it,
// and the page reloads once a run changes status (its metrics and grid are then worth re-reading).
function showProgress(run) {
  const box = document.querySelector(`[data-progress-run="${run.run_id}"]`);
  const done = run.items_done, total = typeof run.items === "number" ? run.items : run.items_total;
  if (box) {
    const meter = box.querySelector("meter");
    if (meter) { meter.max = total || 1; meter.value = done; }
    const count = box.querySelector(".count");
    if (count) count.textContent = `${done}/${total}`;
  }
  const eta = document.querySelector(`[data-eta-run="${run.run_id}"]`);
  if (eta && "eta_seconds" in run) eta.textContent = run.eta_seconds == null ? "–" : `${Math.round(run.eta_seconds)} s`;
  const status = document.querySelector(`[data-status-run="${run.run_id}"]`);
  return status && status.textContent.trim() !== run.status;
}

function poll() {
  const url = document.body.dataset.poll;
  if (!url) return;
  const tick = async () => {
    try {
      const answer = await fetch(url, { headers: { Accept: "application/json" } });
      if (!answer.ok) return;
      const data = await answer.json();
      const changed = (Array.isArray(data) ? data : [data]).map(showProgress).some(Boolean);
      if (changed) { location.reload(); return; }
    } catch (e) { /* the server may be restarting: try again at the next tick */ }
    setTimeout(tick, 3000);
  };
  setTimeout(tick, 3000);
}

document.addEventListener("DOMContentLoaded", () => { wireCompare(); wireSql(); poll(); });
