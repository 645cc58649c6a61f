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
