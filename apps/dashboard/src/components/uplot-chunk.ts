// Loaded on demand (dynamic import) so uPlot, the largest dependency, is fetched only by pages
// that draw charts; the jobs list and the forms stay small.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export default uPlot;
