// Builds the console's rich script editor: src/editor.js with CodeMirror 6 (from the npm
// registry, versions pinned in package-lock.json) into ONE self-contained file,
// host/console/static/editor/editor.js, which the Python package ships when it exists.
// No source map (nothing points outside the file), nothing fetched at run time. The licences
// of the bundled packages are written beside it, as their MIT terms ask of a copy.
import { build } from "esbuild";
import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "host", "console", "static", "editor");

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await build({
  entryPoints: [join(here, "src", "editor.js")],
  outfile: join(out, "editor.js"),
  bundle: true,
  format: "iife",
  target: ["es2020"],
  minify: true,
  sourcemap: false,
  legalComments: "none",
  metafile: true,
  logLevel: "warning",
});

// the packages whose code is in the bundle, each with its licence text
const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match) packages.add(match[1]);
}
const notices = [];
for (const name of [...packages].sort()) {
  const folder = join(here, "node_modules", name);
  const manifest = JSON.parse(await readFile(join(folder, "package.json"), "utf8"));
  const licence = (await readdir(folder)).find((f) => /^licen[cs]e/i.test(f));
  const text = licence ? await readFile(join(folder, licence), "utf8") : `License: ${manifest.license}`;
  notices.push(`${name}@${manifest.version} (${manifest.license})\n\n${text.trim()}\n`);
}
await writeFile(
  join(out, "LICENSES.txt"),
  `Third-party code bundled into editor.js by console-editor/build.mjs\n\n${notices.join("\n---\n\n")}`,
);
console.log(`built ${join("host", "console", "static", "editor", "editor.js")} with ${packages.size} packages`);
