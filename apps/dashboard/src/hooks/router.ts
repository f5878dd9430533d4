import { useEffect, useState } from 'preact/hooks';

const NAVIGATE_EVENT = 'lorafleet:navigate';

export interface LocationSnapshot {
  pathname: string;
  search: string;
}

const snapshot = (): LocationSnapshot => ({
  pathname: window.location.pathname,
  search: window.location.search,
});

/** Client-side navigation with the History API (the server serves index.html for client routes). */
export function navigate(to: string, options: { replace?: boolean } = {}): void {
  const current = window.location.pathname + window.location.search;
  if (to === current && !options.replace) return;
  if (options.replace) window.history.replaceState(null, '', to);
  else window.history.pushState(null, '', to);
  window.dispatchEvent(new Event(NAVIGATE_EVENT));
}

export function useLocation(): LocationSnapshot {
  const [location, setLocation] = useState(snapshot);
  useEffect(() => {
    const update = () => setLocation(snapshot());
    window.addEventListener('popstate', update);
    window.addEventListener(NAVIGATE_EVENT, update);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener(NAVIGATE_EVENT, update);
    };
  }, []);
  return location;
}
