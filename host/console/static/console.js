// The console's own script: small progressive enhancements; every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // a focused error summary is read out and reachable at once
  const summary = document.getElementById("form-errors");
  if (summary) summary.focus();

  // confirm destructive buttons
  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  }

  // copy buttons: <button data-copy="ID"> copies the value of the input ID
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      field.select();
      let copied = false;
      try {
        await navigator.clipboard.writeText(field.value);
        copied = true;
      } catch (_error) {
        copied = document.execCommand && document.execCommand("copy");
      }
      const status = document.getElementById(button.dataset.copy + "-status");
      if (status) status.textContent = copied ? "Copied." : "Select the text and copy it.";
    });
  }

  // drag and drop onto a file input's drop zone (the plain input stays usable)
  for (const zone of document.querySelectorAll(".dropzone")) {
    const input = zone.querySelector("input[type=file]");
    const names = zone.querySelector(".dropped");
    const show = () => {
      if (names) names.textContent = Array.from(input.files).map((f) => f.webkitRelativePath || f.name).join(", ");
    };
    input.addEventListener("change", show);
    zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        show();
      }
    });
  }
});

// an upload form with data-progress="ID" shows its upload in <progress id=ID>; the answer
// (the next page, or the page's main part with the form's errors) is shown as a plain post's
document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-progress]")) {
    const bar = document.getElementById(form.dataset.progress);
    form.addEventListener("submit", (event) => {
      if (!window.XMLHttpRequest || !bar) return;
      event.preventDefault();
      const request = new XMLHttpRequest();
      request.open("POST", form.action);
      // the redirected page this request fetches leaves the flash for the page opened next
      request.setRequestHeader("X-Console-Upload", "1");
      bar.hidden = false;
      request.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 100);
      });
      request.addEventListener("load", () => {
        bar.value = 100;
        if (request.responseURL && request.responseURL !== form.action) {
          window.location.assign(request.responseURL);
        } else {
          const answer = new DOMParser().parseFromString(request.responseText, "text/html");
          document.querySelector("main").replaceWith(answer.querySelector("main"));
          const summary = document.getElementById("form-errors");
          if (summary) summary.focus();
        }
      });
      request.send(new FormData(form));
    });
  }
});

// a campaign's live progress: <section data-poll="URL"> fetches the campaign (JSON) every
// second and fills its [data-field] elements, until the send is over and the service has
// reported the campaign finished ("live": false); without script the page shows the state
// at load
document.addEventListener("DOMContentLoaded", () => {
  const section = document.querySelector("[data-poll]");
  if (!section || !window.fetch) return;
  const show = (name, text) => {
    const element = section.querySelector(`[data-field="${name}"]`);
    if (element) element.textContent = text;
  };
  const poll = async () => {
    let campaign;
    try {
      const answer = await fetch(section.dataset.poll, { headers: { Accept: "application/json" } });
      if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
      campaign = await answer.json();
    } catch (error) {
      show("live-note", `Could not update (${error.message}); retrying.`);
      window.setTimeout(poll, 3000);
      return;
    }
    const p = campaign.progress;
    const badge = section.querySelector('[data-field="status"] .badge');
    if (badge) {
      badge.textContent = campaign.status;
      badge.className = "badge " + (["Sent", "Sending", "Scheduled"].includes(campaign.status) ? "on"
        : ["Failed", "Cancelled"].includes(campaign.status) ? "off" : "");
    }
    show("stage", p.stage);
    show("externalId", campaign.externalId || "—");
    show("total", p.total);
    show("exported", p.exported);
    show("prepared", p.prepared);
    show("skipped", p.skipped);
    show("batches", `${p.batches} (up to ${p.batchSize} recipients each)`);
    show("rateLimitedUntil", p.rateLimitedUntil
      ? `the service asked to slow down: next batch at ${p.rateLimitedUntil.replace("T", " ").slice(0, 19)} UTC`
      : "no");
    show("finishedAt", campaign.finishedAt ? campaign.finishedAt.replace("T", " ").slice(0, 19) : "—");
    show("percent", `${Math.round(p.percent)}%`);
    const bar = document.getElementById("campaign-progress");
    if (bar) bar.value = p.percent;
    const error = section.querySelector('[data-field="error"]');
    if (error) {
      error.textContent = campaign.error || "";
      error.hidden = !campaign.error;
    }
    if (["done", "failed", "cancelled", "creating"].includes(p.stage)) {
      for (const form of document.querySelectorAll("form[data-hide-when-done]")) form.hidden = true;
    }
    if (campaign.live) {
      window.setTimeout(poll, 1000);
    } else {
      show("live-note", "Finished: reload the page for its stats and deliveries.");
    }
  };
  window.setTimeout(poll, 1000);
});
