//! Thin wrappers over `statrs` distributions, so that the statistics read
//! like the formulas they implement (`normal_ppf(0.975)`), and so that the
//! infinite-degrees-of-freedom limit of Student's t is the normal law.

use statrs::distribution::{ChiSquared, Continuous, ContinuousCDF, Normal, StudentsT};

fn standard_normal() -> Normal {
    Normal::standard()
}

pub(crate) fn normal_cdf(x: f64) -> f64 {
    standard_normal().cdf(x)
}

/// Upper tail `1 - cdf(x)`, without the cancellation of computing it so.
pub(crate) fn normal_sf(x: f64) -> f64 {
    standard_normal().sf(x)
}

pub(crate) fn normal_pdf(x: f64) -> f64 {
    standard_normal().pdf(x)
}

pub(crate) fn normal_ppf(p: f64) -> f64 {
    standard_normal().inverse_cdf(p)
}

/// Student's t with `dof` degrees of freedom; `None` means the normal limit.
fn students_t(dof: f64) -> Option<StudentsT> {
    if dof.is_finite() {
        StudentsT::new(0.0, 1.0, dof).ok()
    } else {
        None
    }
}

pub(crate) fn t_cdf(x: f64, dof: f64) -> f64 {
    match students_t(dof) {
        Some(t) => t.cdf(x),
        None if dof == f64::INFINITY => normal_cdf(x),
        None => f64::NAN,
    }
}

pub(crate) fn t_sf(x: f64, dof: f64) -> f64 {
    match students_t(dof) {
        Some(t) => t.sf(x),
        None if dof == f64::INFINITY => normal_sf(x),
        None => f64::NAN,
    }
}

/// Quantile of Student's t. statrs' inverse is only good to about 1e-6
/// relative at millions of degrees of freedom (typical of experiments), so
/// it is the start of Newton steps on the accurate cdf.
pub(crate) fn t_ppf(p: f64, dof: f64) -> f64 {
    let Some(t) = students_t(dof) else {
        return if dof == f64::INFINITY {
            normal_ppf(p)
        } else {
            f64::NAN
        };
    };
    let mut x = t.inverse_cdf(p);
    for _ in 0..4 {
        let density = t.pdf(x);
        if !(x.is_finite() && density > 0.0) {
            break;
        }
        let step = (t.cdf(x) - p) / density;
        x -= step;
        if step.abs() <= 1e-15 * x.abs().max(1.0) {
            break;
        }
    }
    x
}

/// Upper tail of the chi-square law with `dof` degrees of freedom.
pub(crate) fn chi_square_sf(x: f64, dof: f64) -> f64 {
    match ChiSquared::new(dof) {
        Ok(chi2) => chi2.sf(x),
        Err(_) => f64::NAN,
    }
}
