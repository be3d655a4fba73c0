// Runs before the page paints (a classic script in <head>, no inline script under the CSP):
// the theme the user chose last, else the system's. theme-switch.js keeps it up to date.
(function () {
  var chosen = null;
  try { chosen = localStorage.getItem("kynsey-theme"); } catch (e) { /* storage blocked: follow the system */ }
  var dark = chosen ? chosen === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
})();
