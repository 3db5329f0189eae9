// wanlora's dashboard: the little the pages need a script for. Everything else works without it.
"use strict";

// `wanlora dashboard` opens /signin#<one-time code>: the fragment never reaches a server or a log.
// Take it out of the address bar at once, then exchange it for a session cookie.
function localSignIn() {
  const form = document.getElementById("local-sign-in");
  const code = window.location.hash.slice(1);
  if (!form || !code) return;
  history.replaceState(null, "", window.location.pathname);
  form.elements.code.value = code;
  form.submit();
}

// A trial's figures, refreshed every few seconds from its JSON while the page is open.
function liveTrial() {
  const section = document.querySelector("[data-live]");
  if (!section) return;
  const show = (v) => (v === null || v === undefined ? "—" : typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : String(v));
  const set = (name, value) => {
    const el = section.querySelector(`[data-field="${name}"]`);
    if (el) el.textContent = show(value);
  };
  async function refresh() {
    try {
      const response = await fetch(section.dataset.live, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const trial = await response.json();
      set("status", trial.status);
      set("share", trial.share);
      set("verdict", trial.verdict);
      for (const side of ["candidate", "current"]) {
        for (const field of ["reports", "failures", "error_rate", "rating", "seconds"]) {
          set(`${side}.${field}`, trial[side] ? trial[side][field] : null);
        }
      }
      set("updated", new Date().toLocaleTimeString());
      if (trial.status !== "running") return;
    } catch (err) {
      return;
    }
    window.setTimeout(refresh, 3000);
  }
  window.setTimeout(refresh, 3000);
}

document.addEventListener("DOMContentLoaded", () => {
  localSignIn();
  liveTrial();
});
