// The script editor's rich view: CodeMirror 6 over the page's textarea, which stays the form
// field the server reads. Every change is copied back into it, so Validate, Run function and
// Save post exactly what the editor shows, with or without this bundle.
//
// The page (host/console/templates/scripts.html) loads this file only when the build exists
// and passes its per-response CSP nonce on the <script> element: CodeMirror mounts its styles
// in a <style> element, which the console's policy admits only with that nonce.
import { basicSetup } from "codemirror";
import { autocompletion } from "@codemirror/autocomplete";
import { python } from "@codemirror/lang-python";
import { indentUnit } from "@codemirror/language";
import { indentWithTab } from "@codemirror/commands";
import { lintGutter, setDiagnostics } from "@codemirror/lint";
import { EditorState, StateField, Text } from "@codemirror/state";
import { Decoration, EditorView, WidgetType, keymap } from "@codemirror/view";

const nonce = document.currentScript ? document.currentScript.nonce : "";

// A problem's message shown under its line, as the textarea view's marker is: visible without
// hovering, and read out by screen readers as a note.
class ProblemNote extends WidgetType {
  constructor(severity, text) {
    super();
    this.severity = severity;
    this.text = text;
  }

  eq(other) {
    return other.severity === this.severity && other.text === this.text;
  }

  toDOM() {
    const note = document.createElement("p");
    note.className = `marker ${this.severity}`;
    note.setAttribute("role", "note");
    note.textContent = this.text;
    return note;
  }
}

// The Validate answer's markers, rendered by the server into the highlighted view as
// <p class="marker" data-line data-severity data-message>: the same problems, now as lint
// diagnostics on the editor's lines (gutter, underline, F8 / Ctrl-Shift-m panel) and notes.
function serverMarkers(doc) {
  const found = [];
  for (const element of document.querySelectorAll(".code .marker[data-line]")) {
    const number = Number(element.dataset.line);
    if (!Number.isInteger(number) || number < 1 || number > doc.lines) continue;
    const line = doc.line(number);
    found.push({
      from: line.from,
      to: line.to,
      severity: element.dataset.severity === "error" ? "error" : "warning",
      message: element.dataset.message || element.textContent,
      note: element.textContent,
    });
  }
  return found;
}

function notesField(markers) {
  const build = () =>
    Decoration.set(
      markers.map((m) =>
        Decoration.widget({ widget: new ProblemNote(m.severity, m.note), block: true, side: 1 }).range(
          m.to,
        ),
      ),
      true,
    );
  return StateField.define({
    create: build,
    update: (notes, transaction) => notes.map(transaction.changes),
    provide: (field) => EditorView.decorations.from(field),
  });
}

// fits the console's layout: never wider than the page (long lines scroll inside the editor,
// so nothing scrolls sideways at 390 px), tall enough to work in, the page's monospace font
const theme = EditorView.theme({
  "&": { maxWidth: "100%", border: "1px solid #8a93a3", borderRadius: "4px", background: "#fff" },
  "&.cm-focused": { outline: "3px solid #f0a500", outlineOffset: "2px" },
  ".cm-scroller": { minHeight: "24rem", maxHeight: "75vh", overflow: "auto" },
  ".cm-scroller, .cm-tooltip": { fontFamily: "ui-monospace, monospace", fontSize: "0.9rem" },
  ".cm-content .marker": { margin: "0", padding: "0.15rem 0.5rem", fontFamily: "system-ui, sans-serif" },
});

function mount(textarea) {
  const label = document.querySelector(`label[for="${textarea.id}"]`);
  const help = document.getElementById(`${textarea.id}-keys`);
  const doc = Text.of(textarea.value.split("\n"));
  const markers = serverMarkers(doc);
  const contentAttributes = { "aria-multiline": "true" };
  if (label) {
    label.id = label.id || `${textarea.id}-label`;
    contentAttributes["aria-labelledby"] = label.id;
  }
  const describedBy = [help ? help.id : "", textarea.getAttribute("aria-describedby") || ""];
  if (describedBy.join("").trim()) contentAttributes["aria-describedby"] = describedBy.join(" ").trim();
  if (textarea.getAttribute("aria-invalid")) contentAttributes["aria-invalid"] = textarea.getAttribute("aria-invalid");

  const view = new EditorView({
    state: EditorState.create({
      doc,
      extensions: [
        basicSetup,
        python(),
        indentUnit.of("    "), // PEP 8's four spaces, as the module scripts are written
        // Tab indents; Escape then Tab leaves the editor (CodeMirror's tab focus mode), so the
        // keyboard is never trapped
        keymap.of([indentWithTab]),
        // completions on Ctrl-Space only: a completion still pending from typing would take
        // the Escape meant to release Tab, so the way out must not depend on typing speed
        autocompletion({ activateOnTyping: false }),
        lintGutter(),
        notesField(markers),
        EditorView.cspNonce.of(nonce),
        theme,
        EditorView.contentAttributes.of(contentAttributes),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) textarea.value = update.state.doc.toString();
        }),
      ],
    }),
  });
  view.dispatch(setDiagnostics(view.state, markers));
  // the textarea stays in the form (its value is what is posted) but out of sight and focus
  textarea.hidden = true;
  if (help) help.hidden = false;
  label?.addEventListener("click", () => view.focus());
  textarea.parentElement.insertBefore(view.dom, textarea);
  // the highlighted copy of the script is now the editor itself
  for (const table of document.querySelectorAll("[data-replaced-by-rich-editor]")) table.hidden = true;
}

for (const textarea of document.querySelectorAll("textarea[data-rich-editor]")) mount(textarea);
