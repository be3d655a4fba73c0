// The message pane follows a streaming reply while the reader is at the bottom;
// once they scroll up it stays where they are and offers "Jump to latest".

const NEAR_PX = 24; // this close to the bottom counts as "at the bottom"

export function followPane(pane, jump) {
  let following = true;
  const distance = () => pane.scrollHeight - pane.scrollTop - pane.clientHeight;
  const update = () => { jump.hidden = following || distance() <= NEAR_PX; };

  // Only the reader's scrolling changes ``following``: growing content does not fire "scroll".
  pane.addEventListener("scroll", () => {
    following = distance() <= NEAR_PX;
    update();
  }, { passive: true });
  jump.addEventListener("click", () => {
    toLatest();
    pane.focus({ preventScroll: true });
  });

  function toLatest() {
    following = true;
    pane.scrollTop = pane.scrollHeight;
    update();
  }

  return {
    // After new content: keep up with it, or say there is more below.
    grew() {
      if (following) pane.scrollTop = pane.scrollHeight;
      update();
    },
    toLatest,
  };
}
