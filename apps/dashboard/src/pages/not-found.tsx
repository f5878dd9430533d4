import { Link } from '../components/link';

export function NotFoundPage({ path }: { path: string }) {
  return (
    <section aria-labelledby="page-title">
      <h1 id="page-title" tabIndex={-1}>
        Page not found
      </h1>
      <p>
        The dashboard has no page at <code>{path}</code>. <Link href="/jobs">Go to jobs</Link>.
      </p>
    </section>
  );
}
