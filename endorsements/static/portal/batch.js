/*
 * Live progress for one batch on the HR portal's batch page.
 *
 * The websocket /ws/notifications/ pushes {"event": "batch.progress" | "batch.completed",
 * "data": {...batch counts...}} for the user's employer. Pushes are hints: on connect the
 * page refetches the batch status once (and again every SAFETY_MS), so a missed message
 * costs nothing. When the socket cannot open or drops, the page polls the status URL
 * instead. When the batch is finished the error section is reloaded in place.
 *
 * For tests and debugging, #batch-progress carries data-transport ("websocket" or
 * "polling") and data-last-source (what delivered the last update).
 */
(function () {
  "use strict";

  var root = document.getElementById("batch-progress");
  if (!root) {
    return;
  }
  var POLL_MS = 1500;
  var POLL_MAX_MS = 15000;
  var SAFETY_MS = 20000;
  var OPEN_TIMEOUT_MS = 5000;
  var FINAL_STATES = { COMPLETED: true, FAILED: true };
  // Every figure and sentence comes from the server's message (progress_message), so the
  // bar, the counts and the words beside them are one source and cannot disagree.
  var TEXT_FIELDS = [
    "state", "rows_checked_text", "accepted_count", "rejected_count", "duplicate_count", "status_text",
  ];

  var batchId = String(root.dataset.batchId);
  var bar = document.getElementById("batch-progress-bar");
  var announcement = document.getElementById("batch-announcement");
  var finished = false;
  var polling = false;
  var pollDelay = POLL_MS;
  var safetyTimer = null;
  var socket = null;
  var lastAnnounced = -1;

  function setField(name, value) {
    var nodes = root.querySelectorAll('[data-field="' + name + '"]');
    for (var i = 0; i < nodes.length; i += 1) {
      nodes[i].textContent = value;
    }
  }

  function announce(text) {
    announcement.textContent = text;
  }

  function render(batch, source) {
    if (finished || !batch) {
      return;
    }
    if (String(batch.batch_id) !== batchId) {
      return;
    }
    var progress = Math.max(0, Math.min(100, Number(batch.progress) || 0));
    bar.value = progress;
    bar.textContent = progress + "%";
    setField("progress", progress);
    TEXT_FIELDS.forEach(function (name) {
      if (batch[name] !== undefined && batch[name] !== null) {
        setField(name, batch[name]);
      }
    });
    root.dataset.state = batch.state;
    root.dataset.lastSource = source;
    if (FINAL_STATES[batch.state]) {
      finish(batch);
      return;
    }
    // Announce in quarters, not on every percent, so screen readers are not flooded.
    var quarter = Math.floor(progress / 25);
    if (quarter !== lastAnnounced) {
      lastAnnounced = quarter;
      announce(batch.status_text);
    }
  }

  function finish(batch) {
    finished = true;
    polling = false;
    clearInterval(safetyTimer);
    if (socket) {
      socket.onclose = null;
      socket.close();
      socket = null;
    }
    announce(batch.status_text);
    reloadErrors();
  }

  function reloadErrors() {
    fetch(root.dataset.pageUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (!html) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("batch-errors");
        var current = document.getElementById("batch-errors");
        if (fresh && current) {
          current.replaceWith(fresh);
        }
        root.dataset.errorsLoaded = "true";
      })
      .catch(function () {});
  }

  function refresh(source) {
    return fetch(root.dataset.statusUrl, {
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("status " + response.status);
        }
        return response.json();
      })
      .then(function (batch) {
        render(batch, source);
        return true;
      })
      .catch(function () {
        return false;
      });
  }

  function poll() {
    if (!polling || finished) {
      return;
    }
    refresh("poll").then(function (ok) {
      pollDelay = ok ? POLL_MS : Math.min(pollDelay * 2, POLL_MAX_MS);
      if (polling && !finished) {
        setTimeout(poll, pollDelay);
      }
    });
  }

  function startPolling() {
    if (polling || finished) {
      return;
    }
    polling = true;
    root.dataset.transport = "polling";
    poll();
  }

  function connect() {
    if (!("WebSocket" in window)) {
      startPolling();
      return;
    }
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var target = root.dataset.socketPath; // a path on this origin, or a whole ws:// URL
    try {
      socket = new WebSocket(/^wss?:\/\//.test(target) ? target : scheme + window.location.host + target);
    } catch (error) {
      startPolling();
      return;
    }
    var opened = false;
    var openTimer = setTimeout(function () {
      if (!opened && socket) {
        socket.close();
      }
    }, OPEN_TIMEOUT_MS);
    socket.onopen = function () {
      opened = true;
      clearTimeout(openTimer);
      root.dataset.transport = "websocket";
      refresh("refetch");
      safetyTimer = setInterval(function () {
        refresh("refetch");
      }, SAFETY_MS);
    };
    socket.onmessage = function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (message && (message.event === "batch.progress" || message.event === "batch.completed")) {
        render(message.data, "websocket");
      }
    };
    socket.onclose = function () {
      clearTimeout(openTimer);
      clearInterval(safetyTimer);
      socket = null;
      if (!finished) {
        startPolling();
      }
    };
  }

  if (FINAL_STATES[root.dataset.state]) {
    return;
  }
  connect();
})();
