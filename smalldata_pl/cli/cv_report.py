"""``smalldata cv-report``: summarise fold runs that ran as separate jobs."""

from collections.abc import Sequence
from dataclasses import dataclass

from smalldata_pl.cli.options import command_parser, parse_options
from smalldata_pl.evaluation.summary import collect_folds, format_summary, summarize, write_summary


@dataclass
class CrossValidationReportOptions:
    """Options of ``smalldata cv-report``.

    Args:
        cv_dir: Folder holding ``fold_<k>/`` runs (e.g. cluster array jobs of ``smalldata fit --data.init_args.fold
            k --trainer.logger.init_args.save_dir DIR --trainer.logger.init_args.name fold_k
            --trainer.logger.init_args.version ''``).
    """

    cv_dir: str


def cv_report_command(argv: Sequence[str]) -> dict:
    """``smalldata cv-report DIR``: write summary.json/csv of the fold runs under DIR."""
    parser = command_parser(
        "smalldata cv-report", "Summarise fold runs into summary.json/csv.", CrossValidationReportOptions, ["cv_dir"]
    )
    options = parse_options(parser, CrossValidationReportOptions, argv)
    summary = summarize(collect_folds(options.cv_dir))
    write_summary(options.cv_dir, summary)
    print(format_summary(summary))
    return summary
