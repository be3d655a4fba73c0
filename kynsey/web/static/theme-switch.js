// The theme toggle: light or dark, remembered in this browser. Until the user
// chooses, the page follows the system setting (prefers-color-scheme), live.

import { icon } from "./dom.js";

const KEY = "kynsey-theme";
const system = matchMedia("(prefers-color-scheme: dark)");

function stored() {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export const currentTheme = () => document.documentElement.dataset.theme;

function apply(theme, button) {
  document.documentElement.dataset.theme = theme;
  const dark = theme === "dark";
  button.setAttribute("aria-pressed", String(dark));
  button.title = dark ? "Dark theme (on)" : "Dark theme (off)";
  button.querySelector("svg")?.remove();
  button.prepend(icon(dark ? "moon" : "sun"));
}

export function initThemeSwitch(button) {
  apply(stored() || (system.matches ? "dark" : "light"), button);
  button.addEventListener("click", () => {
    const next = currentTheme() === "dark" ? "light" : "dark";
    try {
      localStorage.setItem(KEY, next);
    } catch { /* not remembered, still applied */ }
    apply(next, button);
  });
  system.addEventListener("change", () => { if (!stored()) apply(system.matches ? "dark" : "light", button); });
}
