import { useEffect, useRef } from 'preact/hooks';
import { ConnectionBanner } from './components/connection-banner';
import { Link } from './components/link';
import { matchRoute, type Route } from './lib/routes';
import { navigate, useLocation } from './hooks/router';
import { session, useSignedIn } from './hooks/session';
import { FleetPage } from './pages/fleet';
import { JobDetailPage } from './pages/job-detail';
import { JobsPage } from './pages/jobs';
import { NewJobPage } from './pages/new-job';
import { NotFoundPage } from './pages/not-found';
import { PlaygroundPage } from './pages/playground';
import { SignInPage } from './pages/sign-in';

const TITLES: Record<Route['page'], string> = {
  'sign-in': 'Sign in',
  jobs: 'Jobs',
  'new-job': 'New job',
  job: 'Job',
  fleet: 'Fleet',
  playground: 'Playground',
  'not-found': 'Not found',
};

function Page({ route }: { route: Route }) {
  switch (route.page) {
    case 'sign-in':
      return <SignInPage next={route.next} />;
    case 'jobs':
      return <JobsPage status={route.status} after={route.after} limit={route.limit} />;
    case 'new-job':
      return <NewJobPage />;
    case 'job':
      // key: a different job id is a fresh page (its own polling and state).
      return <JobDetailPage key={route.id} id={route.id} />;
    case 'fleet':
      return <FleetPage />;
    case 'playground':
      return (
        <PlaygroundPage
          selection={{ base: route.base, adapters: route.adapters, mode: route.mode }}
        />
      );
    case 'not-found':
      return <NotFoundPage path={route.path} />;
  }
}

function NavLink({
  href,
  current,
  children,
}: {
  href: string;
  current: boolean;
  children: string;
}) {
  return (
    <Link href={href} class="nav-link" aria-current={current ? 'page' : undefined}>
      {children}
    </Link>
  );
}

export function App() {
  const location = useLocation();
  const signedIn = useSignedIn();
  const route = matchRoute(location.pathname, location.search);
  const mustSignIn = !signedIn && route.page !== 'sign-in';
  const firstRender = useRef(true);

  useEffect(() => {
    if (mustSignIn) {
      const here = location.pathname + location.search;
      navigate(
        here === '/' || here === '/jobs' ? '/sign-in' : `/sign-in?next=${encodeURIComponent(here)}`,
        {
          replace: true,
        },
      );
    }
  }, [mustSignIn, location.pathname, location.search]);

  useEffect(() => {
    document.title = `${route.page === 'job' ? `Job ${route.id}` : TITLES[route.page]} · lorafleet`;
    // Move focus to the new page's heading so keyboard and screen-reader users land on it.
    if (firstRender.current) {
      firstRender.current = false;
      return;
    }
    window.scrollTo(0, 0);
    // Unless the new page already focused something of its own (the sign-in field).
    if (!document.getElementById('main')?.contains(document.activeElement)) {
      document.getElementById('page-title')?.focus();
    }
  }, [location.pathname]);

  if (mustSignIn) return null;
  const section = route.page === 'job' || route.page === 'new-job' ? 'jobs' : route.page;
  return (
    <>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <Link href="/jobs" class="brand">
          lorafleet
        </Link>
        {signedIn ? (
          <nav aria-label="Main">
            <NavLink href="/jobs" current={section === 'jobs' && route.page !== 'new-job'}>
              Jobs
            </NavLink>
            <NavLink href="/jobs/new" current={route.page === 'new-job'}>
              New job
            </NavLink>
            <NavLink href="/playground" current={section === 'playground'}>
              Playground
            </NavLink>
            <NavLink href="/fleet" current={section === 'fleet'}>
              Fleet
            </NavLink>
            <button
              type="button"
              class="button button-small button-ghost"
              onClick={() => {
                session.signOut('You are signed out.');
                navigate('/sign-in', { replace: true });
              }}
            >
              Sign out
            </button>
          </nav>
        ) : null}
      </header>
      <ConnectionBanner />
      <main id="main" tabIndex={-1}>
        <Page route={route} />
      </main>
    </>
  );
}
