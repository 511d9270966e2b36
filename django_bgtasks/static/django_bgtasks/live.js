/* django-bgtasks admin: live refresh of a page's marked regions (docs/admin.md).
 *
 * Every few seconds the page is fetched again and each element marked data-live-region is
 * replaced by its counterpart in the new page. Loaded as a file with <script defer>, no
 * inline code, no eval, no style attributes: it works under
 * "script-src 'self'; style-src 'self'".
 *
 * It does nothing while the tab is hidden, while a form control on the page is in use or
 * changed (a selected row, a chosen action, a search being typed), when the user prefers
 * reduced motion (unless they switched it on here), or when they switched it off with the
 * "Live" checkbox (remembered in localStorage).
 */
(function () {
  "use strict";

  var STORAGE_KEY = "django_bgtasks.live";
  var DEFAULT_PERIOD_S = 5;

  var control = document.querySelector("[data-live-control]");
  if (!control || !window.fetch || !window.DOMParser) {
    return;  // the page has nothing live, or the browser cannot: it stays as it is
  }
  var toggle = control.querySelector("input[data-live-toggle]");
  var status = control.querySelector("[data-live-status]");
  var reduced = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)");
  var timer = null;
  var inFlight = false;

  function storedChoice() {
    try {
      return window.localStorage.getItem(STORAGE_KEY);  // "on", "off" or null
    } catch (e) {
      return null;  // storage refused (privacy settings): follow the default
    }
  }

  function remember(on) {
    try {
      window.localStorage.setItem(STORAGE_KEY, on ? "on" : "off");
    } catch (e) { /* not remembered; this page still follows the checkbox */ }
  }

  function wanted() {
    var choice = storedChoice();
    if (choice) {
      return choice === "on";
    }
    return !(reduced && reduced.matches);
  }

  function say(text) {
    // One short status, only when it changes: a screen reader hears no per-refresh chatter.
    if (status && status.textContent !== text) {
      status.textContent = text;
    }
  }

  function every() {
    return "every " + period() / 1000 + " s";
  }

  function period() {
    var seconds = Number(control.getAttribute("data-live-period"));
    return (seconds > 0 ? seconds : DEFAULT_PERIOD_S) * 1000;
  }

  function changed(field) {
    if (field.matches("input[type=checkbox], input[type=radio]")) {
      return field.checked !== field.defaultChecked;
    }
    if (field.tagName === "SELECT") {
      return Array.prototype.some.call(field.options, function (option) {
        return option.selected !== option.defaultSelected;
      });
    }
    if (field.matches("input[type=hidden], input[type=submit], button")) {
      return false;
    }
    return "defaultValue" in field && field.value !== field.defaultValue;
  }

  function busy() {
    // A replaced region would drop what the user is doing: their selection, their input.
    var active = document.activeElement;
    if (active && active !== toggle && active.closest("form")) {
      return true;
    }
    var fields = document.querySelectorAll("form input, form select, form textarea");
    return Array.prototype.some.call(fields, function (field) {
      return field !== toggle && changed(field);
    });
  }

  function swap(fresh) {
    var replaced = false;
    document.querySelectorAll("[data-live-region]").forEach(function (region) {
      var name = region.getAttribute("data-live-region");
      var next = fresh.querySelector('[data-live-region="' + CSS.escape(name) + '"]');
      if (next && next.innerHTML !== region.innerHTML) {
        region.replaceWith(document.importNode(next, true));
        replaced = true;
      }
    });
    var boxes = document.querySelectorAll("tr input.action-select");
    if (replaced && boxes.length && typeof window.Actions === "function") {
      // Django's actions.js holds the rows it was given: hand it the new ones.
      window.Actions(boxes);
    }
  }

  function refresh() {
    if (inFlight || document.hidden || busy()) {
      return schedule();
    }
    inFlight = true;
    window.fetch(window.location.href, {credentials: "same-origin", cache: "no-store",
                                        headers: {"X-Requested-With": "django-bgtasks-live"}})
      .then(function (response) {
        if (!response.ok || response.redirected) {
          throw new Error(response.redirected ? "signed out" : "HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (text) {
        if (toggle.checked && !busy()) {  // the user may have started something meanwhile
          swap(new DOMParser().parseFromString(text, "text/html"));
        }
        say(every());
      })
      .catch(function (error) {
        say("last refresh failed (" + error.message + ")");
      })
      .then(function () {
        inFlight = false;
        schedule();
      });
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = toggle.checked && !document.hidden ? window.setTimeout(refresh, period()) : null;
  }

  function start(on) {
    toggle.checked = on;
    say(on ? every() : (reduced && reduced.matches && !storedChoice()
                        ? "off (reduced motion)" : "off"));
    schedule();
  }

  toggle.addEventListener("change", function () {
    remember(toggle.checked);
    start(toggle.checked);
  });
  document.addEventListener("visibilitychange", schedule);
  if (reduced && reduced.addEventListener) {
    reduced.addEventListener("change", function () { start(wanted()); });
  }
  control.hidden = false;
  start(wanted());
}());
