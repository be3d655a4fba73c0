// On a phone the conversation list is a drawer behind the menu button: it slides
// over the chat (which is inert meanwhile), Escape or a tap outside closes it, and while it is closed its
// links are out of the tab order (CSS hides it with visibility, not just a transform).

import { icon } from "./dom.js";

const PHONE = matchMedia("(max-width: 700px)");

// ``onPick`` runs after a conversation or a new chat is picked from the open drawer.
export function initDrawer({ button, drawer, backdrop, app, main, onPick }) {
  const isOpen = () => app.classList.contains("drawer-open");

  function setOpen(open, { focus = true } = {}) {
    app.classList.toggle("drawer-open", open);
    button.setAttribute("aria-expanded", String(open));
    backdrop.hidden = !open;
    main.inert = open; // like a modal: the chat behind it is out of reach until it closes
    if (open && focus) (drawer.querySelector('[aria-current="page"]') || drawer.querySelector("button, a"))?.focus();
    else if (!open && focus && drawer.contains(document.activeElement)) button.focus();
  }

  button.prepend(icon("menu"));
  button.addEventListener("click", () => setOpen(!isOpen()));
  backdrop.addEventListener("click", () => setOpen(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && isOpen()) {
      event.preventDefault();
      setOpen(false);
    }
  });
  // Opening a conversation or starting a new chat from the drawer closes it.
  drawer.addEventListener("click", (event) => {
    if (!isOpen() || !event.target.closest("a.conv-open, #newChat")) return;
    setOpen(false, { focus: false });
    onPick();
  });
  PHONE.addEventListener("change", () => { if (!PHONE.matches) setOpen(false, { focus: false }); });
  return { toggle: () => setOpen(!isOpen(), { focus: false }), isOpen, isPhone: () => PHONE.matches };
}
