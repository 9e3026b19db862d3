/**
 * notiflow for React: a `useNotifications` hook over `NotiflowClient` (notiflow.js).
 *
 * React is not bundled and not imported here, so this module loads as it is, from
 * `/static/notiflow/react.js`, with or without a bundler. Give it your React once:
 *
 *     // with a bundler or an import map that maps "react"
 *     import React from "react";
 *     import { createUseNotifications } from "/static/notiflow/react.js";
 *     export const useNotifications = createUseNotifications(React);
 *
 *     function Bell() {
 *       const { unreadCount, notifications, status, markRead, markAllRead } = useNotifications();
 *       ...
 *     }
 *
 * or, with React as a global (a `<script>` tag), call `useNotifications(options)` from
 * this module directly: it takes React from `options.React`, else `globalThis.React`.
 *
 * `useNotifications(options)` takes `NotiflowClient`'s options (see notiflow.js), plus
 * `onNotification(notification, {source})`, called once per new notification (a toast,
 * a sound). It returns `{notifications, unreadCount, status, markRead, markAllRead,
 * client}`: the list newest first, the unread count, the connection status
 * ("connecting" | "open" | "reconnecting" | "polling" | "closed"), the client's
 * `markRead(ids)` and `markAllRead()` (promises; rejected when there is no client yet),
 * and the client itself (`null` before the first effect runs).
 *
 * The client connects when the component mounts and closes (code 1000) when it
 * unmounts. It is made again when `url`, `apiBase` or `token` change; the other
 * options are read when it is made, except `getTicket` and `onNotification`, of
 * which the latest are always called.
 */

import { NotiflowClient } from "./notiflow.js";

const hooks = new WeakMap(); // React -> its useNotifications

/** The `useNotifications` hook bound to `React` (anything with useState, useEffect, useRef, useCallback). */
export function createUseNotifications(React) {
  if (!React || typeof React.useState !== "function") {
    throw new TypeError("createUseNotifications(React): pass the React module (with its hooks).");
  }
  const cached = hooks.get(React);
  if (cached) return cached;
  const { useCallback, useEffect, useRef, useState } = React;

  function useNotifications(options = {}) {
    const latest = useRef(options);
    latest.current = options;
    const clientRef = useRef(null);
    const [client, setClient] = useState(null);
    const [state, setState] = useState(() => ({
      notifications: Array.isArray(options.notifications) ? options.notifications : [],
      unreadCount: options.unreadCount ?? 0,
      status: "closed",
    }));

    useEffect(() => {
      const { React: _react, onNotification: _onNotification, getTicket, ...clientOptions } = latest.current;
      if (getTicket) clientOptions.getTicket = () => latest.current.getTicket();
      const created = new NotiflowClient(clientOptions);
      const sync = () =>
        setState({ notifications: created.notifications, unreadCount: created.unreadCount, status: created.status });
      const removers = [
        created.on("change", sync),
        created.on("unread", sync),
        created.on("status", sync),
        created.on("notification", (notification, meta) => {
          if (typeof latest.current.onNotification === "function") latest.current.onNotification(notification, meta);
        }),
      ];
      clientRef.current = created;
      setClient(created);
      created.connect();
      sync();
      return () => {
        removers.forEach((remove) => remove());
        created.close();
        if (clientRef.current === created) clientRef.current = null;
      };
    }, [options.url, options.apiBase, options.token]);

    const markRead = useCallback(
      (ids) => (clientRef.current ? clientRef.current.markRead(ids) : Promise.reject(new Error("notiflow: no client"))),
      [],
    );
    const markAllRead = useCallback(
      () => (clientRef.current ? clientRef.current.markAllRead() : Promise.reject(new Error("notiflow: no client"))),
      [],
    );

    return { ...state, markRead, markAllRead, client };
  }

  hooks.set(React, useNotifications);
  return useNotifications;
}

/** The hook with React from `options.React` or `globalThis.React` (a UMD build in a `<script>` tag). */
export function useNotifications(options = {}) {
  const React = options.React ?? globalThis.React;
  if (!React) {
    throw new TypeError(
      "useNotifications: React was not found; pass options.React, or use createUseNotifications(React).",
    );
  }
  return createUseNotifications(React)(options);
}
