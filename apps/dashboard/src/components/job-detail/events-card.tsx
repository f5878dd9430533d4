import type { FineTuningJobEvent } from '@lorafleet/contracts';
import { useState } from 'preact/hooks';
import { formatTimestamp } from '../../lib/format';
import { visibleEvents } from '../../lib/events';

/** How many more events each "Show older events" reveals (and how many show at first). */
const EVENTS_SHOWN_STEP = 100;

/** The event log, newest first; metrics events stay hidden unless asked for. */
export function EventsCard({ events }: { events: FineTuningJobEvent[] }) {
  const [showMetricEvents, setShowMetricEvents] = useState(false);
  const [eventsShown, setEventsShown] = useState(EVENTS_SHOWN_STEP);
  const { shown, metricEventCount } = visibleEvents(events, showMetricEvents);
  return (
    <div class="card">
      <div class="card-head">
        <h2>Events</h2>
        <label class="checkbox">
          <input
            type="checkbox"
            checked={showMetricEvents}
            onChange={(e) => setShowMetricEvents(e.currentTarget.checked)}
          />
          Show metrics events ({metricEventCount})
        </label>
      </div>
      {shown.length === 0 ? (
        <p class="muted">No events yet.</p>
      ) : (
        <ol class="events" id="events-log" aria-label="Events, newest first">
          {shown.slice(0, eventsShown).map((event) => (
            <li key={event.id} class={`event event-${event.level}`} data-type={event.type}>
              <time dateTime={new Date(event.created_at * 1000).toISOString()}>
                {formatTimestamp(event.created_at)}
              </time>
              <span class={`level level-${event.level}`}>{event.level}</span>
              <span class="event-message">{event.message}</span>
            </li>
          ))}
        </ol>
      )}
      {shown.length > eventsShown ? (
        <button
          type="button"
          class="button"
          onClick={() => setEventsShown(eventsShown + EVENTS_SHOWN_STEP)}
        >
          Show older events
        </button>
      ) : null}
    </div>
  );
}
