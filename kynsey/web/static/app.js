// The chat page: log in, then the tier bar and the chat. Each part lives in its
// own module; this one only wires them to the page and to the session.

import * as api from "./api.js";
import { announce, show } from "./dom.js";
import { canStop, initChat, loadConversations, newChat, openFromHash, stopReply } from "./chat.js";
import { initDrawer } from "./drawer.js";
import { initPasswordDialog } from "./password.js";
import { initShortcuts } from "./shortcuts.js";
import { initThemeSwitch } from "./theme-switch.js";
import { initSelector, setOpen as openTierPicker } from "./tier-select.js";
import { chooseTier } from "./tier-switch.js";
import { bindTierUi, onTiersChange, refreshTiers, setTierMessage, startPolling, state as tierState } from "./tiers.js";
import { initUpgradeCard } from "./upgrade.js";
import { describeError } from "./words.js";

const $ = (id) => document.getElementById(id);
let started = false;
let signedIn = false;

function boot() {
  initThemeSwitch($("themeToggle"));
  api.onUnauthenticated((err) => { if (signedIn) showLogin(describeError(err)); });
  $("loginForm").addEventListener("submit", onLogin);
  $("logoutButton").addEventListener("click", onLogout);
  initPasswordDialog({
    button: $("passwordButton"), dialog: $("passwordDialog"), form: $("passwordForm"), current: $("currentPassword"),
    next: $("newPassword"), error: $("passwordError"), done: $("passwordDone"), close: $("passwordClose"),
    save: $("passwordSave"),
  });
  api.me().then(
    (session) => enter(session.user),
    (err) => showLogin(err.status === 401 && err.details.reason !== "session_expired" ? "" : describeError(err)),
  );
}

function showLogin(message) {
  signedIn = false;
  show($("appView"), false);
  show($("userMenu"), false);
  show($("menuButton"), false);
  show($("loginView"), true);
  $("loginError").textContent = message;
  show($("loginError"), Boolean(message));
  ($("loginName").value ? $("loginPassword") : $("loginName")).focus();
}

async function onLogin(event) {
  event.preventDefault();
  $("loginButton").disabled = true;
  try {
    const session = await api.login($("loginName").value, $("loginPassword").value);
    $("loginPassword").value = "";
    await enter(session.user);
  } catch (err) {
    showLogin(describeError(err, { action: "login" }));
  } finally {
    $("loginButton").disabled = false;
  }
}

async function onLogout() {
  try {
    await api.logout();
  } finally {
    location.replace("/");
  }
}

async function enter(user) {
  signedIn = true;
  $("userName").textContent = user.name;
  $("userPlan").textContent = `${user.plan} plan`;
  show($("adminLink"), user.is_admin);
  show($("loginView"), false);
  show($("userMenu"), true);
  show($("menuButton"), true);
  show($("appView"), true);
  if (!started) start();
  try {
    await refreshTiers();
  } catch (err) {
    setTierMessage(`Couldn't load the tiers. ${describeError(err)}`);
  }
  await loadConversations();
  await openFromHash();
  if (document.activeElement === document.body || $("loginView").contains(document.activeElement)) $("messageInput").focus();
}

function start() {
  started = true;
  bindTierUi({
    display: $("activeModelDisplay"),
    toggle: $("tierToggle"),
    panel: $("tierPanel"),
    group: $("modelTierSelect"),
    progress: $("tierProgress"),
    progressText: $("tierProgressText"),
    progressTime: $("tierProgressTime"),
    error: $("tierError"),
  });
  initSelector();
  onTiersChange((body) => { $("userPlan").textContent = `${body.plan} plan`; }); // an approved upgrade shows at once
  initUpgradeCard($("upgradeCard"), { onSwitch: chooseTier, onClose: () => $("tierToggle").focus() });
  initChat({
    list: $("conversationList"),
    newChat: $("newChat"),
    title: $("conversationTitle"),
    messages: $("messages"),
    jump: $("jumpLatest"),
    empty: $("emptyChat"),
    error: $("chatError"),
    composer: $("composer"),
    input: $("messageInput"),
    send: $("sendButton"),
    hint: $("composerHint"),
    search: $("conversationSearch"),
  });
  startPolling();
  const drawer = initDrawer({
    button: $("menuButton"), drawer: $("sidebar"), backdrop: $("drawerBackdrop"), app: $("appView"),
    main: document.querySelector("main.chat"), onPick: () => $("messageInput").focus(),
  });
  const inChat = (action) => () => {
    if (!signedIn) return; // the login form is showing
    if (drawer.isOpen()) drawer.toggle();
    action();
  };
  initShortcuts({
    dialog: $("helpDialog"),
    table: $("shortcutTable"),
    helpButton: $("helpButton"),
    actions: {
      newChat: inChat(newChat),
      focusComposer: inChat(() => $("messageInput").focus()),
      tierPicker: inChat(openPicker),
      canStop: () => signedIn && canStop(),
      stop: stopReply,
      search: inChat(() => {
        if (drawer.isPhone()) drawer.toggle();
        $("conversationSearch").focus();
      }),
    },
  });
}

function openPicker() {
  if (!tierState.enabled) {
    announce("Switching tiers is turned off for you; the default tier answers.");
    return;
  }
  openTierPicker(true);
}

boot();
